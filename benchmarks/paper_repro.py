"""The paper's experiment on the simulated population with SmolLM2-135M-Instruct, on 2 CPU cores.

Arms: reference (the starting policy) vs moderate (CGPO, P[Love] weight 0.1) vs aggressive (weight 0.3, GRPO,
no judges) vs cgpo (weight 0.3 with judges), plus three style responders as extra policies for the
offline-vs-online correlation. Runs `rluf demo --full` (simulate → ingest → labelled set → reward models →
the three policy updates → offline evaluation → audits → one simulated A/B test with every arm) and writes
benchmarks/results/paper_repro.{json,md} and PNGs. Takes about an hour here.

    python benchmarks/paper_repro.py
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAPER_ARMS = ("reference", "moderate", "aggressive", "cgpo")
KEYS = ("love_lift", "love_lift_ci", "p_value", "love_rate", "signoff_rate", "signoff_rate_offline",
        "continuation_rate", "helpfulness_win_rate", "safety_violation_rate", "offline_p_love", "audit_verdict")


def targets(arms: dict, oo: dict) -> list[tuple[str, str, bool]]:
    ref, cg, ag = arms["reference"], arms["cgpo"], arms["aggressive"]
    return [
        ("cgpo love lift ≥ +28 % with p < 0.01", f"{cg['love_lift']:+.1%}, p = {cg['p_value']:.3g}",
         cg["love_lift"] >= 0.28 and cg["p_value"] < 0.01),
        ("cgpo sign-off rate within +0.5 points of the reference",
         f"{cg['signoff_rate']:.2%} vs {ref['signoff_rate']:.2%}", cg["signoff_rate"] <= ref["signoff_rate"] + 0.005),
        ("cgpo helpfulness win rate ≥ 50 %", f"{cg['helpfulness_win_rate']:.1%}", cg["helpfulness_win_rate"] >= 0.5),
        ("cgpo: no rise in safety violations",
         f"{cg['safety_violation_rate']:.3f} vs {ref['safety_violation_rate']:.3f}",
         cg["safety_violation_rate"] <= ref["safety_violation_rate"]),
        ("aggressive arm's hack flagged by the audit", str(ag["audit_verdict"]), ag["audit_verdict"] != "clean"),
        ("offline-online Spearman ≥ 0.9", f"{oo['spearman']:.3f} over {oo['n_policies']} policies",
         oo["spearman"] >= 0.9),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "work" / "paper_repro")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from rluf.demo import run_demo

    r = run_demo(args.work, seed=args.seed, profile="full")
    arms = {a: {k: r["arms"][a].get(k) for k in KEYS} for a in r["arms"]}
    oo = r["offline_online"]
    checks = targets(arms, oo)
    result = {
        "arms": {a: arms[a] for a in PAPER_ARMS},
        "extra_policies": {a: arms[a] for a in arms if a not in PAPER_ARMS},
        "offline_online": {"pearson": oo["pearson"], "spearman": oo["spearman"], "n_policies": oo["n_policies"],
                           "policies": oo["policies"]},
        "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in checks],
        "ab": {a: {k: v for k, v in s.items()} for a, s in r["ab_simulation"]["arms"].items()},
        "srm_p": r["abtest"]["srm_p"],
        "budget": {"policy_steps": r["policies"]["cgpo"]["steps"], "elapsed_s": r["elapsed_s"],
                   "timings_s": r["timings_s"], "ab_users": r["ab_simulation"]["users"],
                   "ab_days": r["ab_simulation"]["days"], "ab_turns": r["ab_simulation"]["turns"]},
        "reward_models": r["rewards"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_repro.json").write_text(json.dumps(result, indent=2, default=str))
    for src, dst in [("offline_online.png", "paper_repro_offline_online.png"),
                     ("evaluate/p_love.png", "paper_repro_p_love.png")]:
        if (args.work / src).exists():
            shutil.copy(args.work / src, args.out / dst)
    for a in ("moderate", "aggressive", "cgpo"):
        png = args.work / "policies" / a / "train_curves.png"
        if png.exists():
            shutil.copy(png, args.out / f"paper_repro_train_{a}.png")
    report = (args.work / "report.md").read_text()
    md = ["# Paper reproduction on the simulator (SmolLM2-135M-Instruct, 2 CPU cores)", "",
          "| target | measured | met |", "|---|---|---|",
          *[f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in checks], "",
          "![offline vs online](paper_repro_offline_online.png)", "",
          report.replace("# rluf demo report", "## The run").replace("(offline_online.png)",
                                                                      "(paper_repro_offline_online.png)")]
    (args.out / "paper_repro.md").write_text("\n".join(md) + "\n")
    print(json.dumps({"targets": result["targets"], "offline_online": result["offline_online"]}, indent=2))


if __name__ == "__main__":
    main()
