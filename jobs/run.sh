#!/usr/bin/env bash
# `make run`: build the default corpora, then run the default scaling campaign
# (jobs/campaigns/default.ini: the four architectures on the data, params and
# FLOPs axes) on all cores into its own directory under runs/, ending with the
# fitted rates, the table and the figures (analysis/scaling.py), and say where
# they are. Interrupted, it resumes: THINKSCALE_CAMPAIGN_DIR=runs/campaign-...
# make run continues that directory. The per-domain evaluation job of earlier
# versions is `make run-default` (jobs/default.sh).
source "$(dirname "$0")/lib.sh"
campaign=${THINKSCALE_CAMPAIGN:-jobs/campaigns/default.ini}
dir=${THINKSCALE_CAMPAIGN_DIR:-runs/campaign-$(date +%Y%m%d-%H%M%S)}
build/float/thinkscale campaign plan "$campaign" | tail -7
echo "== campaign $campaign on $ranks ranks into $dir"
mpirun -np "$ranks" build/float/thinkscale campaign run "$campaign" --dir "$dir"
echo "== results: $dir/results.h5"
echo "== fitted rates: $dir/fits.md (and fits.csv)"
echo "== figures: $dir/figures/ (all_axes.png: every axis; compute_matched.png: loss at equal FLOPs)"
cat "$dir/fits.md"
