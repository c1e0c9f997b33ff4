"""Progress display: a rich bar with the loss, the task's training stats, images/s and ETA, or plain lines with
--quiet. What is shown and how it is formatted comes from the task's metric specs."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn


def fmt_row(row: dict, task=None) -> str:
    """One epoch as a line: train and validation metrics in the task's own formats."""
    from ..tasks import column_formats, format_value

    formats = column_formats(task) if task is not None else {}
    bar = {f"val_{m.name}" for m in task.metrics if m.bar} | {f"train_{m.name}" for m in task.train_metrics} \
        if task is not None else set(row)

    def part(prefix):
        keys = [k for k in row if k.startswith(prefix) and (k in bar or k == prefix + "loss")]
        return " ".join(f"{k[len(prefix):]} {format_value(formats.get(k, 'loss'), row[k])}" for k in keys)

    parts = [f"epoch {row['epoch']}", f"train {part('train_')}", f"val {part('val_')}",
             f"lr {row['lr']:.3g}  {row['epoch_time']:.1f}s  {row['images_per_s']:,.0f} img/s"]
    return " | ".join(parts)


class Progress:
    def __init__(self, task=None, quiet: bool = False, log=print):
        self.log, self.task = log, task
        self.live = not quiet and sys.stdout.isatty()
        self.bar = None
        if self.live:
            self.console = Console()
            self.bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console, transient=True)
            self.bar.start()
            self.bar_task = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.bar is not None:
            if self.bar_task is not None:
                self.bar.remove_task(self.bar_task)
            self.bar_task = self.bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, stats="")

    def update(self, done: int, loss: float, stats: dict, ips: float) -> None:
        if self.bar is not None:
            from ..tasks import format_value

            specs = {m.name: m.fmt for m in self.task.train_metrics} if self.task is not None else {}
            shown = " ".join(f"{k} {format_value(specs.get(k, 'loss'), v)}" for k, v in stats.items())
            self.bar.update(self.bar_task, completed=done, stats=f"loss {loss:.4f} {shown} {ips:,.0f} img/s")

    def end_epoch(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.console.print(fmt_row(row, self.task))
        else:
            self.log(fmt_row(row, self.task))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
