"""`rluf demo`: the loop on embedded defaults, top to bottom.

For now: simulate traffic → ingest it into a SQLite store → build the labelled set → its card.
Later stages (P[Love], CGPO, audit, A/B) append to this same flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rluf.progress import stderr


def run_demo(out: Path, users: int = 3000, days: int = 7, seed: int = 0,
             data_dir: Path | None = None) -> dict[str, Any]:
    from rluf.data import DatasetConfig, build_dataset
    from rluf.paths import DEFAULT_DATA_DIR, data_dir_available
    from rluf.simulate import SimulateConfig, run_simulation
    from rluf.store import connect
    from rluf.store.ingest import ingest

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    if not data_dir_available(data_dir):
        stderr.print(f"[yellow]{data_dir} not found: the simulator uses its built-in prompt set[/yellow]")

    stderr.print(f"[bold]1/3 simulate[/bold] {users} users × {days} days")
    sim_dir = out / "sim"
    sim = run_simulation(SimulateConfig(users=users, days=days, seed=seed, data_dir=data_dir), sim_dir)

    stderr.print("[bold]2/3 ingest[/bold] into the store")
    db_path = out / "rluf.db"
    db_url = f"sqlite:///{db_path}"
    engine = connect(db_url)
    ing = ingest(engine, [sim_dir / "interactions.jsonl", sim_dir / "reactions.jsonl"])

    stderr.print("[bold]3/3 labelled set[/bold] (signal love)")
    # Positives upsampled to 10 % as the paper trains; the factor in the card undoes it for P[Love].
    card = build_dataset(engine, DatasetConfig(signal="love", upsample_to=0.1), out / "dataset")
    return {"out": str(out), "db": db_url, "simulate": sim, "ingest": ing, "card": card}
