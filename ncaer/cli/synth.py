"""`ncaer synth`: FERAtt's synthetic protocol."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console, default_workers, out_console


@click.command()
@click.option("--faces", required=True, type=click.Path(exists=True, file_okay=False),
              help="An `ncaer build` output whose face crops are pasted.")
@click.option("--backgrounds", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of images or another build [the masked context images of other clips of --faces].")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--size", default=128, show_default=True, type=click.IntRange(16), help="Output images are size x size.")
@click.option("--per-face", default=1, show_default=True, type=click.IntRange(1), help="Composites per face crop.")
@click.option("--face-min", default=0.3, show_default=True, type=click.FloatRange(0.05, 1),
              help="Smallest face width, as a fraction of the image.")
@click.option("--face-max", default=0.6, show_default=True, type=click.FloatRange(0.05, 1))
@click.option("--light-match", default=0.7, show_default=True, type=click.FloatRange(0, 1),
              help="How far the face's brightness and contrast move to the background's.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--workers", default=default_workers, show_default="CPU count", type=click.IntRange(1))
def synth(faces, backgrounds, out, size, per_face, face_min, face_max, light_match, seed, workers):
    """Paste face crops on backgrounds (random scale, flip, rotation, shear, light matching), keeping the
    clean face on black as a reconstruction target: FERAtt's synthetic protocol.

    Writes OUT/images (composites), OUT/targets (faces on black), OUT/crop (where the face is) and
    manifest.parquet with the `ncaer build` columns plus target_path, source_sample, background.
    Splits are those of the source faces.
    """
    from ncaer.synth.composite import SynthConfig, synthesize

    if face_min > face_max:
        raise click.UsageError("--face-min must not exceed --face-max")
    config = SynthConfig(faces=str(faces), out=str(out), backgrounds=str(backgrounds) if backgrounds else None,
                         size=size, face_min=face_min, face_max=face_max, light_match=light_match,
                         per_face=per_face, seed=seed, workers=workers)
    try:
        with console.status("compositing ..."):
            manifest, problems = synthesize(config)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    counts = manifest["split"].value_counts()
    out_console.print(f"{len(manifest)} composites in {out} ("
                      + ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "val", "test")) + ")"
                      + (f"; {len(problems)} problems in failures.csv" if problems else ""))
