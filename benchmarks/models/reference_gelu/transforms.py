"""Albumentations pipelines for CIFAR-10 (albumentations 2.x spelling).

CoarseDropout cuts exactly one 16x16 hole and fills it with the dataset mean. The hole is cut on
the uint8 image, before Normalize, so the fill is the mean in 0..255 units.
"""

import albumentations as A
from albumentations.pytorch import ToTensorV2

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
FILL = tuple(round(m * 255) for m in CIFAR10_MEAN)

train_transforms = A.Compose(
    [
        A.HorizontalFlip(p=0.5),
        A.ShiftScaleRotate(shift_limit=0.0625, scale_limit=0.1, rotate_limit=10, p=0.5),
        A.CoarseDropout(
            num_holes_range=(1, 1),
            hole_height_range=(16, 16),
            hole_width_range=(16, 16),
            fill=FILL,
            fill_mask=None,
            p=0.25,
        ),
        A.Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD),
        ToTensorV2(),
    ]
)

test_transforms = A.Compose([A.Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD), ToTensorV2()])
