"""Scaling-campaign analysis: reads a campaign's results.h5 (the contract in
docs/campaign-results-format.md), fits scaling laws with bootstrap intervals
and writes fits.csv, fits.md and figures/. The method is in
docs/scaling-analysis.md; the entry point is analysis/scaling.py."""
