"""Resumable experiment sweeps (`mrpruner-sweep`, `python -m mrpruner.sweep`): a grid of models x
methods x pruning ratios x tasks x limits, each cell one lmms-eval run of the `llava_next_pruned`
model, one JSON result file per cell.

    grid     the grid, read from a sweep YAML and the command line, checked whole before anything runs
    cells    one cell through lmms-eval (its own process or this one) and a finished cell's record
    run      the sweep loop (`run_sweep`), stop signals, and where a grid stands (`grid_status`)
    cli      the command line (`main`)

None of it is on a cell's measuring path (`mrpruner.results.code_fingerprint` does not read this
folder): what a cell measures is the lmms-eval model and the plug-in.
"""
