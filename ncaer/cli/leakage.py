"""`ncaer check-leakage`: options and the summary table; exit status 1 when leakage is found."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .common import console, default_workers, identity_options, out_console


@click.command("check-leakage")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", default="leakage-report", show_default=True, type=click.Path(path_type=Path),
              help="Folder for leaks.csv, clusters.csv, unreadable.csv, leaks.png and report.json.")
@click.option("--threshold", default=10, show_default=True, type=click.IntRange(0),
              help="Near-duplicate radius: pHash bits that may differ, at most 23 (beyond, the pHashes of "
                   "unrelated images match and the search compares every pair).")
@click.option("--dhash-threshold", default=14, show_default=True, type=click.IntRange(0, 64),
              help="dHash bits that may differ for a pHash match to count (64: pHash alone).")
@click.option("--region", default="image", show_default=True, type=click.Choice(["image", "context"]),
              help="Hash the whole image, or the context with the face box blacked out (needs boxes).")
@click.option("--embedding", is_flag=True, help="Also compare image embeddings (cosine).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="torchvision-format ResNet-18 state dict for --embedding; without it a colour thumbnail is used.")
@click.option("--embedding-threshold", default=0.95, show_default=True, type=click.FloatRange(0, 1),
              help="Cosine similarity from which two images count as near-duplicates.")
@click.option("--workers", default=default_workers, show_default="CPU count", type=click.IntRange(1))
@click.option("--fix", "fix_out", type=click.Path(path_type=Path), default=None,
              help="Write a cleaned split here (manifest or file lists) without the leaking val/test images. "
                   "Source files are never moved or deleted.")
@click.option("--sheet-pairs", default=24, show_default=True, type=click.IntRange(1),
              help="Pairs shown in leaks.png.")
@click.option("--identity", is_flag=True,
              help="Also check actors: cluster the clips' subjects by face identity (dlib, needs "
                   "pip install \"ncaer[identity]\") and report identities seen in more than one split "
                   "(identities.csv, identities.png). An ncaer build only (its manifest's face boxes).")
@identity_options("--identity", "docs/check-leakage.md")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def check_leakage_cmd(dataset, out, threshold, dhash_threshold, region, embedding, weights, embedding_threshold,
                      workers, fix_out, sheet_pairs, identity, identity_model, identity_threshold, as_json):
    """Check a static dataset for train/test leakage and show where it is.

    DATASET is an `ncaer build` output (manifest.parquet), the NCAER-S release layout
    (images/{split}/{Class}, boxes in crop/) or any image folder {split}/{Class}/*.jpg
    (CAER-S). For each later split (val, test) it counts the images with a twin in an
    earlier one: same source video (manifest), identical pixels, perceptual
    near-duplicate, and optionally similar embedding.

    Exit status: 0 no leakage, 1 leakage found, 2 usage error.
    """
    import json

    from ncaer.dataset.imageset import DatasetError, load_imageset
    from ncaer.leakage.check import LeakConfig, check_leakage
    from ncaer.leakage.fix import write_fix
    from ncaer.leakage.report import summary_dict, write_report

    if not identity and (identity_model != "dlib" or identity_threshold is not None):
        raise click.UsageError("--identity-model and --identity-threshold are options of --identity")
    actor_model = _identity_model(dataset, identity_model) if identity else None  # before any work
    try:
        config = LeakConfig(threshold=threshold, dhash_threshold=dhash_threshold, region=region,
                            embedding=embedding or weights is not None, embedding_threshold=embedding_threshold,
                            workers=workers)
        imageset = load_imageset(dataset)
        embedder = None
        if weights:  # the one place the leak check uses a network: torch is imported only here
            from glamor_model.serve.embed import ResNetEmbedder

            embedder = ResNetEmbedder(weights)
        with console.status(f"hashing {len(imageset.images)} images ..."):
            report = check_leakage(imageset, config, embedder)
    except (DatasetError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    paths = write_report(report, out, sheet_pairs)
    removed = write_fix(report, fix_out) if fix_out else None
    actors = _check_actors(dataset, out, actor_model, identity_threshold) if identity else None
    if as_json:
        summary = summary_dict(report)
        if actors is not None:
            summary["identity"] = json.loads((out / "report.json").read_text())["identity"]
        click.echo(json.dumps(summary, indent=2))
    else:
        _print_leak_summary(report, paths, fix_out, removed)
        if actors is not None:
            _print_identity_summary(*actors)
    raise SystemExit(1 if report.leaked or (actors is not None and actors[0].leaked) else 0)


def _identity_model(dataset: Path, model: str):
    """The identity model, loaded; a dataset that is not an ncaer build or a missing model is a clear error."""
    from ncaer.identity.embed import IdentityError
    from ncaer.identity.models import load_embedder

    if not (dataset / "manifest.parquet").is_file():
        raise click.UsageError(f"--identity needs an ncaer build (manifest.parquet with face boxes); "
                               f"{dataset} has none")
    try:
        return load_embedder(model)
    except IdentityError as e:  # exit 2, a usage error: 1 would read as "leakage found"
        raise click.UsageError(str(e)) from e


def _check_actors(dataset: Path, out: Path, embedder, threshold: float | None):
    """The identity check on an ncaer build: embeddings, identities, report files."""
    from rich.progress import Progress

    from ncaer.dataset.manifest import read_manifest
    from ncaer.identity.check import check_identities
    from ncaer.identity.report import write_identity_report

    manifest = read_manifest(dataset)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("identity embeddings", total=int(manifest["has_face"].sum()))
        report = check_identities(manifest, dataset, embedder, threshold or embedder.threshold,
                                  on_progress=lambda done, total: bar.update(task, completed=done))
    return report, write_identity_report(report, dataset, out)


def _print_identity_summary(report, paths) -> None:
    c = report.counts
    table = Table(title=f"actors ({report.model}, distance < {report.threshold:g})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("clips", "identities", "shared_identities", "largest_identity_clips", "test_samples",
                "test_samples_with_an_actor_seen_in_train"):
        table.add_row(key.replace("_", " "), str(c[key]))
    out_console.print(table)
    for failure in report.not_embedded[:5]:
        console.print(f"[yellow]not embedded[/] {failure['image_path']}: {failure['reason']}")
    if len(report.not_embedded) > 5:
        console.print(f"  ... {len(report.not_embedded) - 5} more (report.json)")
    out_console.print(f"identities: {paths['identities']}" + (f"; contact sheet: {paths['sheet']}"
                                                              if paths["sheet"] else ""))
    out_console.print("[red bold]ACTORS SHARED BETWEEN SPLITS[/]" if report.leaked
                      else "[green bold]no actor in more than one split[/]")


def _print_leak_summary(report, paths, fix_out, removed) -> None:
    s = report.summary
    table = Table(title=f"leakage: {report.imageset.root} ({report.imageset.kind}, {len(report.imageset.images)} "
                        f"images)")
    table.add_column("earlier -> later split")
    checks = list(dict.fromkeys(s["check"]))
    for check in checks:
        table.add_column(check, justify="right")
    for (a, b), g in s.groupby(["split_a", "split_b"], sort=False):
        cells = []
        for check in checks:
            r = g[g["check"] == check].iloc[0]
            style = "red" if r.leaking else "green"
            cells.append(f"[{style}]{r.leaking}/{r.total} ({r.percent:.1f}%)")
        table.add_row(f"{a} -> {b}", *cells)
    out_console.print(table)
    cfg = report.config
    out_console.print(f"near: pHash <= {cfg.threshold} bits and dHash <= {cfg.dhash_threshold} bits, "
                      f"region {cfg.region}" + (f"; embedding: {report.embedding_used}" if report.embedding_used
                                                 else ""))
    if len(report.unreadable):
        out_console.print(f"[yellow]{len(report.unreadable)} unreadable images skipped[/] (see {paths['unreadable']})")
        for r in report.unreadable.head(5).itertuples():
            out_console.print(f"  {r.image}: {r.reason}")
    t = report.timings
    out_console.print(f"hashed {len(report.imageset.images)} images in {t['hash_s']:.1f} s "
                      f"({t['images_per_s']:.0f}/s); search {t['search_s']:.2f} s")
    out_console.print(f"pairs: {paths['leaks']}; clusters: {paths['clusters']}"
                      + (f"; contact sheet: {paths['sheet']}" if paths["sheet"] else ""))
    if fix_out:
        out_console.print(f"cleaned split in {fix_out}: {len(removed)} leaking images left out (removed.csv)")
    verdict = "[red bold]LEAKAGE FOUND[/]" if report.leaked else "[green bold]no leakage found[/]"
    out_console.print(verdict)
