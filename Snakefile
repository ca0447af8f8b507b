# sparsenets: every figure of PHEW and "Deconstructing the Structure of Sparse Neural Networks".
# `snakemake --cores all` runs the default preset; `--config preset=paper` the papers' settings.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        grid.targets(JOBS),
    default_target: True
