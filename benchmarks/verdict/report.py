"""The table's two outputs, written by the same command: a Markdown section (its own block in docs/results.md,
replaced in place on every run) and the dataset's entry in docs/results.json (the shape checked by
../shared/tools/check_results_json.py). Rows not run are listed with the reason, never given figures."""

from __future__ import annotations

import json
from pathlib import Path

from .config import BenchConfig


def results_json(bench: BenchConfig, res: dict, command: str, progress: dict) -> dict:
    rows = {}
    for name, r in res["rows"].items():
        row = {"kind": r["kind"], "setting": r["setting"], "seeds": r["seeds"], "commit": r["commit"],
               "valid": r["valid"], "test": r["test"], "sweep": r["sweep"], "groups": r["groups"],
               "config": r["config"]}
        if "diff_vs_best_classic" in r:
            row["diff_vs_best_classic"] = {m: {k: d[k] for k in ("mean", "ci_low", "ci_high")}
                                           for m, d in r["diff_vs_best_classic"].items()}
            row["verdict"] = r["verdict"][bench.metric]
        if "false_negatives" in r:
            row["false_negatives"] = r["false_negatives"]
        rows[name] = row
    return {"best_classic": res["best_classic"], "rows": rows, "not_run": res["not_run"],
            "headline": res["headline"], "command": command, "progress": progress,
            "bootstrap": bench.bootstrap.model_dump(), "selection_metric": f"valid {bench.metric}"}


def merge_json(path: Path, dataset: str, entry: dict) -> None:
    """The dataset's entry under `datasets`; a table without a finished classic row (no reference yet) goes under
    `pending` instead, so `datasets` only ever holds tables with figures."""
    data = json.loads(path.read_text()) if path.exists() else {}
    target = "datasets" if entry["best_classic"] else "pending"
    for key in ("datasets", "pending"):
        if key != target:
            data.setdefault(key, {}).pop(dataset, None)
    data.setdefault(target, {})[dataset] = entry  # in its place when it was there: diffs show what changed
    if not data["pending"]:
        data.pop("pending")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=float) + "\n")


def _ms(d: dict) -> str:
    return f"{d['mean']:.4f} ± {d['sd']:.4f}"


def _setting(s: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v}" for k, v in s.items()) or "—"


def _draws(bench: BenchConfig) -> str:
    if not bench.draws:
        return ("LLM stages: one draw on this table (a second draw of the semantic rows' LLM stages does not fit "
                "the CPU time of this machine).")
    return (f"LLM stages: {1 + len(bench.draws)} draws. Rows `<row>@S` ran the stages "
            f"{', '.join(bench.draw_stages)} again with `llm_seed: S` on the same split and inputs, at the setting "
            "their first-draw row chose on validation, over the same CF seeds; rows without `@` are the first draw "
            "(the pipeline's seed).")


def _stages(stages: dict[str, str]) -> str:
    """The table's stages, said only while one of them is unfinished."""
    if all(v == "done" for v in stages.values()):
        return ""
    return " Stages: " + "; ".join(f"{k} {v}" for k, v in stages.items()) + "."


def markdown(bench: BenchConfig, res: dict, command: str, progress: dict, plot_name: str | None) -> str:
    m, r2 = bench.metric, [x for x in bench.report_metrics if x != bench.metric][:1]
    other = r2[0] if r2 else None
    best = res["best_classic"]
    out = [f"## Verdict table: {bench.dataset}", "", *([bench.note, ""] if bench.note else []),
           f"Regenerate: `{command}` (resumes where it stopped). LightGCN settings shared by every row: "
           f"`{json.dumps(bench.train, separators=(', ', ': '))}`. Each sweep: {bench.grid_points} grid points "
           f"through `hnl-ray tune`, chosen on validation {m}; then {len(bench.seeds)} CF seeds "
           f"({', '.join(map(str, bench.seeds))}). ± is the sample s.d. over seeds. Intervals: paired per-user "
           f"bootstrap ({bench.bootstrap.resamples:,} resamples, {int(bench.bootstrap.level * 100)} %) of the "
           f"difference from the best tuned classic sampler, chosen on validation: **{best or 'none yet'}**.", "",
           f"**Headline:** {res['headline']}", "",
           _draws(bench) if bench.draws or any(r.kind == "semantic" for r in bench.rows.values()) else "", "",
           f"Progress: {progress['rows_done']} of {progress['rows_total']} rows finished "
           f"({progress['as_of']})." + _stages(progress.get("stages") or {}), ""]
    head = ["row", "kind", "chosen setting", "seeds", f"valid {m}", f"test {m}"] + (
        [f"test {other}"] if other else []) + [f"Δ{m} vs {best or 'best classic'} [95 % CI]"] + (
        [f"Δ{other} [95 % CI]"] if other else [])
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in res["rows"].items():
        d = r.get("diff_vs_best_classic")
        ci = (lambda k: f"{d[k]['mean']:+.4f} [{d[k]['ci_low']:+.4f}, {d[k]['ci_high']:+.4f}]") if d else (
            lambda k: "(reference)")
        cells = [name, r["kind"], _setting(r["setting"]), str(r["seeds"]), _ms(r["valid"][m]), _ms(r["test"][m])]
        cells += [_ms(r["test"][other])] if other else []
        cells += [ci(m)] + ([ci(other)] if other else [])
        out.append("| " + " | ".join(cells) + " |")
    for name, why in res["not_run"].items():
        out.append(f"| {name} | {bench.rows[name].kind if name in bench.rows else ''} | {why} |" + " |" * (
            len(head) - 3))
    out += ["", "Verdicts (computed from the intervals):", ""]
    out += [f"* {r['verdict'][m]}" for r in res["rows"].values() if "verdict" in r]
    sweeps = [(n, r["sweep"]) for n, r in res["rows"].items() if r["sweep"]]
    if sweeps:
        out += ["", f"Validation sweeps (best valid {m} per grid point, one seed; the chosen point in bold):", ""]
        for n, pts in sweeps:
            chosen = res["rows"][n]["setting"]
            cells = []
            for p in pts:
                label = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in p.items() if k not in ("best_valid",
                                                                                              "epochs"))
                ok = p["best_valid"] is not None
                text = f"{label}: {p['best_valid']:.4f}" if ok else f"{label}: trial failed"
                cells.append(f"**{text}**" if all(p.get(k) == v for k, v in chosen.items()) else text)
            bad = sum(1 for p in pts if p["best_valid"] is None)
            out.append(f"* {n}: " + "; ".join(cells) + (
                f" — **{bad} of {len(pts)} grid points failed: its budget is smaller than the others'**" if bad
                else ""))
    out += ["", f"Test {m} by group (pair-level for items: 1/log2(rank+2) in the top {m.split('@')[1]}; "
                "user groups: training interactions):", ""]
    labels_i = list(dict.fromkeys(lab for r in res["rows"].values() for lab in r["groups"]["items"]))
    labels_u = list(dict.fromkeys(lab for r in res["rows"].values() for lab in r["groups"]["users"]))
    if res["rows"]:
        head = ["row"] + [f"items {x}" for x in labels_i] + [f"users {x}" for x in labels_u]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        first = next(iter(res["rows"].values()))["groups"]
        out.append("| (test pairs / users) | " + " | ".join(
            [str(first["items"].get(x, {}).get("pairs", "")) for x in labels_i]
            + [str(first["users"].get(x, {}).get("users", "")) for x in labels_u]) + " |")
        for name, r in res["rows"].items():
            g = r["groups"]
            out.append("| " + " | ".join([name] + [f"{g['items'][x][m]:.4f}" if x in g["items"] else "" for x in
                                                    labels_i] + [f"{g['users'][x][m]:.4f}" if x in g["users"]
                                                                 else "" for x in labels_u]) + " |")
        if plot_name:
            out += ["", f"![test {m} by group, {bench.dataset}]({plot_name})"]
    fhn_rows = [(n, r["false_negatives"]) for n, r in res["rows"].items() if "false_negatives" in r]
    if fhn_rows:
        out += ["", "False hard negatives over one epoch at the chosen setting (continuing from seed "
                    f"{bench.seeds[0]}'s chosen model): share of drawn negatives that are the user's validation or "
                    "test items, and mean text cosine (all-MiniLM-L6-v2, item text) of negative to positive:", "",
                "| row | negatives drawn | share valid or test | share valid | share test | text cos to positive |",
                "|---|---|---|---|---|---|"]
        for n, f in fhn_rows:
            if not f["negatives"]:
                out.append(f"| {n} | {f.get('synthesised', 0):,} synthesised (no item id) | n/a | n/a | n/a | n/a |")
                continue
            ts = f["text_sim_to_positive"]
            out.append(f"| {n} | {f['negatives']:,} | {f['share_valid_or_test']:.4%} | {f['share_valid']:.4%} | "
                       f"{f['share_test']:.4%} | {ts:.4f} |" if ts is not None else
                       f"| {n} | {f['negatives']:,} | {f['share_valid_or_test']:.4%} | {f['share_valid']:.4%} | "
                       f"{f['share_test']:.4%} | n/a |")
    commits = sorted({r["commit"] for r in res["rows"].values() if r.get("commit")})
    if commits:
        out += ["", f"Code: {', '.join(c[:12] + ('+dirty' if c.endswith('+dirty') else '') for c in commits)} "
                    "(each row's commit is in results.json)."]
    return "\n".join(out) + "\n"


def replace_block(path: Path, dataset: str, text: str) -> None:
    """Put the table's section between its own markers in `path` (appended the first time)."""
    begin, end = f"<!-- verdict:{dataset}:begin -->", f"<!-- verdict:{dataset}:end -->"
    block = f"{begin}\n{text}{end}\n"
    old = path.read_text() if path.exists() else "# Results\n\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
