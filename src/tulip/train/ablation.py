"""The ablation ladder: variants of the training config, each trained with several seeds.

The ``ablation`` section of the workflow config lists variants as overrides of the ``train``
section. Every variant is resolved on its own, never on top of the previous rung:

    resolved = train  <-  ablation.train (the ladder's scale)  <-  the variant's overrides  <-  {seed}

so editing one variant changes only that variant's config, and the workflow reruns only its runs.
This module imports neither torch nor mlflow, because the workflow imports it while it builds the DAG.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LadderRun:
    """One variant trained with one seed."""

    variant: str  # display name, e.g. "+geco"
    slug: str  # the name in file paths and wildcards, e.g. "plus-geco"
    seed: int
    train: dict  # the fully resolved train section

    @property
    def model_name(self) -> str:
        """The model name under which the evaluation stage files this run's results."""
        return f"ablation-{self.slug}-seed{self.seed}"


def variant_slug(name: str) -> str:
    """Map a variant name to one safe in file names and wildcards: ``"+contrastive-views"`` -> ``"plus-contrastive-views"``."""
    text = name.strip().lower().replace("+", " plus ")
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    if not slug:
        raise ValueError(f"ablation variant name {name!r} has no letters or digits; give it a name such as 'siglip'")
    return slug


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overrides`` applied: mappings merge key by key, any other value replaces.

    Neither argument is modified. A list replaces the whole list, as in Snakemake's config merging.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` for an override key that the train section lacks, or a mapping given for a value.

    The train section of the config is complete and schema-checked, so a key missing from it is a typo.
    """
    for key, value in overrides.items():
        path = f"{where}.{key}"
        if key not in base:
            raise ValueError(f"{path} is not a key of the train section; valid keys here are {sorted(base)}")
        if isinstance(base[key], Mapping):
            if not isinstance(value, Mapping):
                raise ValueError(f"{path} is a mapping in the train section, got {value!r}")
            check_overrides(base[key], value, path)
        elif isinstance(value, Mapping) and base[key] is not None:
            raise ValueError(f"{path} is a single value in the train section, got the mapping {value!r}")


def ladder_variants(ablation: Mapping[str, Any]) -> list[str]:
    """Return the variant names to run, in ladder order: ``ablation.ladder``, or every variant in config order."""
    variants = ablation["variants"]
    order = ablation.get("ladder") or list(variants)
    unknown = [name for name in order if name not in variants]
    if unknown:
        raise ValueError(f"ablation.ladder names {unknown}, which ablation.variants does not define; "
                         f"defined variants are {list(variants)}")
    if len(set(order)) != len(order):
        raise ValueError(f"ablation.ladder lists a variant twice: {order}")
    return list(order)


def resolve_variant(train: Mapping[str, Any], ablation: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Return the train section of variant ``name`` before its seed is set."""
    shared = ablation.get("train") or {}
    overrides = ablation["variants"][name] or {}
    check_overrides(train, shared, "ablation.train")
    check_overrides(train, overrides, f"ablation.variants[{name!r}]")
    return deep_merge(deep_merge(train, shared), overrides)


def ladder_runs(train: Mapping[str, Any], ablation: Mapping[str, Any]) -> list[LadderRun]:
    """Return every (variant, seed) run of the ladder, variants in ladder order, seeds in config order."""
    names = ladder_variants(ablation)
    slugs: dict[str, str] = {}
    for name in names:
        slug = variant_slug(name)
        if slug in slugs:
            raise ValueError(f"ablation variants {slugs[slug]!r} and {name!r} map to the same file name {slug!r}; "
                             "rename one of them")
        slugs[slug] = name
    seeds = list(ablation["seeds"])
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"ablation.seeds lists a seed twice: {seeds}")
    runs = []
    for name in names:
        resolved = resolve_variant(train, ablation, name)
        for seed in seeds:
            runs.append(LadderRun(name, variant_slug(name), int(seed), {**resolved, "seed": int(seed)}))
    return runs


def ladder_plan(train: Mapping[str, Any], ablation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the ladder as plain data for the report: per variant its name, slug, overrides, seeds and config."""
    names = ladder_variants(ablation)
    return [
        {
            "name": name,
            "slug": variant_slug(name),
            "overrides": ablation["variants"][name] or {},
            "seeds": [int(s) for s in ablation["seeds"]],
            "train": resolve_variant(train, ablation, name),
        }
        for name in names
    ]
