"""Train the pytorch/examples VAE (vae/main.py) with its own recipe and save its state_dict: the
checkpoint a user of that example holds, for `import` / `evaluate --weights` / `train --init-from
--source pytorch-examples` (README, "Weights from the sources' own code").

The module is parity_tests/source_modules.PytorchExamplesVAE (fc1 784->400, fc21/fc22 400->20, fc3,
fc4; ReLU, sigmoid), trained as vae/main.py does: Adam(lr=1e-3), batch 128, shuffled, loss BCE(sum) +
KLD(sum), on grey images in [0, 1] (here Fashion-MNIST, read from --data-dir; the example reads MNIST
through torchvision, which is the same float32 x / 255).

    python docs/examples/source_checkpoint.py --out runs/pytorch-examples-fmnist.pt --epochs 10
"""

from __future__ import annotations

import argparse
import time

import torch

from jax_vae.common.data.datasets import load_split
from parity_tests.source_modules import PytorchExamplesVAE, pytorch_examples_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="where to torch.save the state_dict")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=1)  # vae/main.py's --seed default
    a = p.parse_args()
    torch.manual_seed(a.seed)
    x, _ = load_split(a.dataset, "train", a.data_dir, download=True)
    data = torch.from_numpy(x)  # [60000, 784] float32 in [0, 1]
    model = PytorchExamplesVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, a.epochs + 1):
        t0, total = time.perf_counter(), 0.0
        for idx in torch.randperm(len(data)).split(128):
            batch = data[idx]
            eps = torch.randn(len(batch), 20)  # torch.randn_like(std) in the example
            optimizer.zero_grad()
            loss = pytorch_examples_loss(model, batch, eps)
            loss.backward()
            total += loss.item()
            optimizer.step()
        print(
            f"====> Epoch: {epoch} Average loss: {total / len(data):.4f} ({time.perf_counter() - t0:.0f} s)"
        )
    torch.save(model.state_dict(), a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
