"""Train the reference model on CIFAR-10 (the student-side script; the grader uses its own recipe).

python train.py --epochs 20
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets

from model import Net
from transforms import test_transforms, train_transforms


class AlbumentationsCIFAR10(Dataset):
    """torchvision's CIFAR-10 images (uint8 HWC) through an albumentations pipeline."""

    def __init__(self, root: str, train: bool, transform):
        self.data = datasets.CIFAR10(root, train=train, download=True)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        image, label = self.data[i]
        return self.transform(image=np.array(image))["image"], label


def run_epoch(model, loader, device, optimizer=None, scheduler=None):
    training = optimizer is not None
    model.train(training)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=0.1 if training else 0.0)
            if training:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
            total_loss += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(y)
    return total_loss / seen, 100.0 * correct / seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data", default="./data")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_loader = DataLoader(AlbumentationsCIFAR10(args.data, True, train_transforms), batch_size=256, shuffle=True, num_workers=4)  # fmt: skip
    test_loader = DataLoader(AlbumentationsCIFAR10(args.data, False, test_transforms), batch_size=1000, num_workers=4)
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.2, epochs=args.epochs, steps_per_epoch=len(train_loader))  # fmt: skip
    for epoch in range(1, args.epochs + 1):
        train_loss, train_acc = run_epoch(model, train_loader, device, optimizer, scheduler)
        test_loss, test_acc = run_epoch(model, test_loader, device)  # validation after every epoch
        print(f"Epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.2f}% | Test set: Average loss: {test_loss:.4f}, Accuracy: {test_acc:.2f}%")  # fmt: skip


if __name__ == "__main__":
    main()
