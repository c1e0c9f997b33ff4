"""Progress display: a rich bar with loss, accuracy, images/s and ETA, or plain lines with --quiet."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn


def fmt_row(row: dict) -> str:
    parts = [f"epoch {row['epoch']}", f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}",
             f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}"]
    parts.append(f"lr {row['lr']:.3g}  {row['epoch_time']:.1f}s  {row['images_per_s']:,.0f} img/s")
    return " | ".join(parts)


class Progress:
    def __init__(self, quiet: bool = False, log=print):
        self.log = log
        self.live = not quiet and sys.stdout.isatty()
        self.bar = None
        if self.live:
            self.console = Console()
            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=True)
            self.bar.start()
            self.task = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, stats="")

    def update(self, done: int, loss: float, acc: float, ips: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done,
                            stats=f"loss {loss:.4f} acc {acc:.1%} {ips:,.0f} img/s")

    def end_epoch(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.console.print(fmt_row(row))
        else:
            self.log(fmt_row(row))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
