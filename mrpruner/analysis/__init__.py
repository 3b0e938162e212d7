"""What the book's chapters compute, above the measurement (`mrpruner.results`, `mrpruner.sweep`)
and below the pictures (`mrpruner.plotting`):

- `probes`: what a chapter asks of a loaded model (its tokens, selections, answers, token grids);
- `sweeps`: a chapter's sweep run and read back, pooled over models, as tables;
- `statements`: the comparative statements the chapters print, under the book's rule (`mrpruner.rule`).
"""
