"""Review command: export (slide + mask -> overview, areas, GeoJSON, overlay TIFF, web viewer)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("slide", type=click.Path(path_type=Path))
@click.argument("mask", type=click.Path(path_type=Path))
@click.option("-o", "--output", "review_dir", required=True, type=click.Path(path_type=Path),
              help="Review folder to create (built aside and renamed when complete).")
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None,
              help="Take class names and colours from this checkpoint (default: the 8 biopsy classes).")
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="Weight of the class colours over the slide.")
@click.option("--simplify", type=click.FloatRange(min=0.0), default=0.5, show_default=True,
              help="GeoJSON simplification tolerance, in mask pixels (0: keep every vertex).")
@click.option("--min-area", "min_area", type=click.FloatRange(min=0.0), default=10.0, show_default=True,
              help="Leave out GeoJSON regions and holes smaller than this, in square microns.")
@click.option("--no-viewer", is_flag=True, help="Skip index.html and its tiles (no OpenSeadragon needed).")
@click.option("--slide-mpp", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Microns per pixel of the slide's level 0, for slides without that metadata.")
@click.option("--overwrite", is_flag=True, help="Replace an existing review folder.")
def export_command(slide, mask, review_dir, model_path, alpha, simplify, min_area, no_viewer, slide_mpp, overwrite):
    """Write a review folder for SLIDE and its label MASK (e.g. from `wsi-seg predict`).

    \b
    REVIEW_DIR/overview.png          thumbnail, mask blended in, legend, areas
    REVIEW_DIR/areas.csv             per-class area (mm^2) and % of tissue
    REVIEW_DIR/annotations.geojson   QuPath annotations (File > Import objects)
    REVIEW_DIR/overlay.tif           pyramidal overlay slide (QuPath, ASAP, OpenSlide)
    REVIEW_DIR/index.html            offline web viewer (open it in a browser)

    \b
    Example:
      wsi-seg export slide.svs slide.mask.tif -o review/ --model run/best.pt
    """
    from wsi_seg.review import ExportOptions, classes_from_checkpoint, export_review

    classes = classes_from_checkpoint(model_path) if model_path is not None else None
    options = ExportOptions(alpha=alpha, simplify=simplify, min_area_um2=min_area, viewer=not no_viewer,
                            overwrite=overwrite)
    result = export_review(slide, mask, review_dir, classes=classes, options=options, slide_mpp=slide_mpp)
    tissue = sum(a.area_mm2 for a in result.areas if a.percent_of_tissue is not None)
    click.echo(f"{result.review_dir}: {result.features} regions, {tissue:.3f} mm^2 of tissue, "
               f"{len(result.files)} entries in {result.seconds:.1f} s")
    if no_viewer:
        click.echo("web viewer skipped (--no-viewer)")


COMMANDS = [export_command]
