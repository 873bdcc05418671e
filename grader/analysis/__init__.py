"""The trusted side's analysis of the rebuilt graph and the source: layers, receptive field, augmentations."""
