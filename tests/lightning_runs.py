"""Real PyTorch Lightning runs for the doctor's tests: a tiny LightningModule with AdamW and
OneCycleLR, logged by Lightning's CSVLogger, TensorBoardLogger and LearningRateMonitor,
checkpointed by Lightning. The keyword arguments wire the schedule the ways users do."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

EPOCHS, BATCHES, BATCH = 6, 40, 8


class TinyProbe(L.LightningModule):
    def __init__(self, interval: str | None, blind_total: bool) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.interval, self.blind_total = interval, blind_total

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x).squeeze(1), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=1e-3)
        # the accumulation-blind total counts batches; Lightning's estimate counts
        # optimizer steps (batches / accumulate_grad_batches)
        total = EPOCHS * BATCHES if self.blind_total else self.trainer.estimated_stepping_batches
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=int(total))
        config = {"scheduler": sched}
        if self.interval is not None:  # None: Lightning's default, once per epoch
            config["interval"] = self.interval
        return {"optimizer": opt, "lr_scheduler": config}


def lightning_run(
    folder: Path, *, interval: str | None = "step", accum: int = 1, blind_total: bool = False
) -> Path:
    """Train for EPOCHS epochs of BATCHES batches; returns the run folder holding
    csv/version_0/metrics.csv, tb/version_0/events.*, and csv/version_0/checkpoints/*.ckpt."""
    L.seed_everything(0, verbose=False)
    data = TensorDataset(torch.randn(BATCHES * BATCH, 4), torch.randn(BATCHES * BATCH))
    loggers = [
        L.pytorch.loggers.CSVLogger(str(folder), name="csv"),
        L.pytorch.loggers.TensorBoardLogger(str(folder), name="tb"),
    ]
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accumulate_grad_batches=accum,
        logger=loggers,
        callbacks=[L.pytorch.callbacks.LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on workers and small logs
        trainer.fit(TinyProbe(interval, blind_total), DataLoader(data, batch_size=BATCH))
    return folder
