"""Send rating events to a running `lifelora serve`, to try `lifelora update` end to end.

Known users of the served data rate items they have not rated; each rating is drawn from the ratings
that item received in the data (so the feed carries the items' own quality, nothing about the users).
A smoke feed for the loop, not an experiment.

    .venv/bin/python scripts/send-feedback.py --run runs/served --n 400
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpx
import numpy as np

from lifelora.data.store import open_prepared
from lifelora.tasks.runs import task_in, trained_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/served"), help="the served run directory")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server")
    parser.add_argument("--n", type=int, default=400, help="how many events")
    parser.add_argument("--users", type=int, default=50, help="how many users rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="the server's API key, if it has one")
    args = parser.parse_args()

    cfg = trained_config(task_in(args.run / "config.yaml"), args.run)
    data = open_prepared(cfg.dataset, cfg.preset, cfg.data_dir)
    rng = np.random.default_rng(args.seed)
    item_idx = data.sequences["item_idx"].to_numpy()
    ratings = data.sequences["rating"].to_numpy()
    users = rng.choice(np.flatnonzero(data.users["seq_len"].to_numpy() > 0), args.users, replace=False)
    stamp = int(time.time())
    events = []
    for i in range(args.n):
        user = int(users[i % len(users)])
        item = int(rng.choice(data.unseen_items(user)))
        past = ratings[item_idx == item]
        rating = float(rng.choice(past)) if len(past) else float(rng.choice(ratings))
        events.append(
            {
                "event_id": f"feed-{args.seed}-{stamp}-{i}",
                "user": str(data.users["user"][user]),
                "item": str(data.items["item"][item]),
                "rating": rating,
                "timestamp": stamp + i,
            }
        )
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    for start in range(0, len(events), 500):
        response = httpx.post(
            f"{args.url}/feedback", json={"events": events[start : start + 500]}, headers=headers, timeout=60
        )
        response.raise_for_status()
        print(response.json())


if __name__ == "__main__":
    main()
