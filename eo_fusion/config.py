"""Validated configuration: job, catalog and model specs as pydantic models, read from YAML.

Rules that apply to every spec:

* YAML is read like ``yaml.safe_load`` (no arbitrary object construction), with alias/anchor
  expansion capped first (:mod:`eo_fusion.yaml_guard`).
* Unknown keys are rejected; the error names the key and lists the valid ones.
* Relative paths are resolved against the folder of the config file that contains them,
  so a job file works whatever the current directory is.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from eo_fusion.bands import band_keys
from eo_fusion.errors import ConfigError
from eo_fusion.modalities import (
    ModalityDef,
    ModalityOptions,
    find_modality,
    modality_names,
    option_owners,
)
from eo_fusion.yaml_guard import load_yaml_text

#: The folder that holds the ``eo_fusion`` package: the repository for an editable install,
#: ``site-packages`` for a wheel. Only used to record paths portably (:func:`portable_dump`) and
#: to describe a git checkout's version; shipped files are found by :mod:`eo_fusion.resources`.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StrictModel(BaseModel):
    """Base for all specs: unknown keys are errors, instances are immutable."""

    # validate_default: default paths resolve against the config file too, like given ones.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the config file's folder (``context['base_dir']``)."""
    value = Path(value).expanduser()
    if value.is_absolute():
        return value
    base = (info.context or {}).get("base_dir")
    return (Path(base) / value).resolve() if base else value.resolve()


#: A filesystem path that is resolved relative to the config file that names it.
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]

M = TypeVar("M", bound=BaseModel)


def _valid_keys_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Walk ``loc`` through nested models, dicts and lists; return the field names valid there."""
    annotation: Any = model
    for part in loc[:-1]:
        annotation = _strip_optional(annotation)
        origin = getattr(annotation, "__origin__", None)
        if origin in (dict, list, tuple):
            annotation = annotation.__args__[-1]
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        else:
            return []
    annotation = _strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return sorted(annotation.model_fields)
    return []


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X`` (the first non-None member of a union)."""
    args = getattr(annotation, "__args__", None)
    if args and getattr(annotation, "__origin__", None) not in (dict, list, tuple):
        members = [a for a in args if a is not type(None)]
        if members:
            return members[0]
    return annotation


def _did_you_mean(key: str, valid: list[str]) -> str:
    hint = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """Turn a pydantic error into short lines that name the key, the problem and the valid keys.

    Errors raised by the modality checks (:func:`check_modalities`) carry their own list of valid
    keys (``ctx["valid"]``, with ``ctx["label"]``) because those depend on the modality's name.
    """
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        ctx = e.get("ctx") or {}
        if e["type"] == "extra_forbidden":
            valid = list(ctx["valid"]) if "valid" in ctx else _valid_keys_at(model, loc)
            label = ctx.get("label", "valid keys here")
            guess = _did_you_mean(str(loc[-1]), valid)
            lines.append(f"unknown key '{where}'{guess}; {label}: {', '.join(valid) or 'none'}")
        elif e["type"] == MODALITY_REFUSED:
            valid = list(ctx["valid"])
            guess = _did_you_mean(str(ctx["key"]), valid)
            lines.append(f"'{where}': {e['msg']}{guess}; {ctx['label']}: {', '.join(valid)}")
        else:
            lines.append(f"'{where}': {e['msg']}")
    return f"{source}: " + "; ".join(lines)


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with ``safe_load``; errors name the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}", fix="check the path") from e
    try:
        data = load_yaml_text(text, source=str(path))  # alias bombs refused first
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})", fix="fix the YAML syntax") from e
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}",
            fix="write the config as 'key: value' lines",
        )
    return dict(data)


def parse_spec(model: type[M], data: Mapping[str, Any], *, base_dir: Path, source: str) -> M:
    """Validate ``data`` into ``model``; relative paths resolve against ``base_dir``."""
    try:
        return model.model_validate(dict(data), context={"base_dir": Path(base_dir)})
    except ValidationError as e:
        raise ConfigError(
            format_validation_error(e, model, source),
            fix=f"see docs/configuration.md for the options of {model.__name__}",
        ) from e


def load_spec(model: type[M], path: Path) -> M:
    """Load a YAML file into a spec model (unknown keys rejected, paths relative to the file)."""
    path = Path(path).resolve()
    return parse_spec(model, load_yaml(path), base_dir=path.parent, source=str(path))


def portable_dump(spec: BaseModel) -> dict[str, Any]:
    """``spec.model_dump(mode="json")`` with paths inside the project made relative to its root.

    Model cards and run records carry their specs; absolute paths would leak the training
    machine's layout and break when the repository moves.
    """
    root = str(PROJECT_ROOT) + "/"

    def strip(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(root):
            return value[len(root) :]
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(spec.model_dump(mode="json"))


def spec_hash(spec: BaseModel) -> str:
    """Stable sha256 of a spec's content (used to tell a changed job from a resumed one).

    Paths inside the project count relative to its root, so moving the checkout does not turn a
    resume into a new run.
    """
    payload = json.dumps(portable_dump(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Job spec sections. Each section documents its options; docs/configuration.md is generated
# from these models (``make docs``, tools/docs_gen.py).
# --------------------------------------------------------------------------------------------


class AOISpec(StrictModel):
    """Area of interest: exactly one of ``bbox``, ``geojson`` or ``wkt``."""

    bbox: tuple[float, float, float, float] | None = Field(
        None, description="minx, miny, maxx, maxy in the units of `crs`"
    )
    geojson: ConfigPath | None = Field(None, description="path to a GeoJSON file (any CRS)")
    wkt: str | None = Field(None, description="WKT geometry in the units of `crs`")
    crs: str = Field("EPSG:4326", description="CRS of `bbox`/`wkt` (EPSG code, WKT or PROJ)")

    @model_validator(mode="after")
    def _exactly_one(self) -> AOISpec:
        given = [k for k in ("bbox", "geojson", "wkt") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of bbox, geojson, wkt (got {given or 'none'})")
        return self


def window_text(window: tuple[date | None, date | None]) -> str:
    """A (first, last) window as ``first/last`` ISO dates, ``..`` for an open end (STAC style)."""
    first, last = window
    return f"{first.isoformat() if first else '..'}/{last.isoformat() if last else '..'}"


class TimeSpec(StrictModel):
    """Time window: absolute (``start``/``end``, ISO dates) or relative (``last_days``).

    ``last_days: N`` is resolved against the run date (``eo-fusion map --run-date``, default:
    today in UTC) to the N days ending on, and including, that date: scheduled jobs map a moving
    window while a rerun with the same ``--run-date`` maps exactly the same one.
    """

    start: str | None = Field(None, description="first date, ISO 8601 (inclusive)")
    end: str | None = Field(None, description="last date, ISO 8601 (inclusive)")
    last_days: int | None = Field(
        None, ge=1, description="window of N days ending on the run date (for scheduled jobs)"
    )

    @model_validator(mode="after")
    def _absolute_or_relative(self) -> TimeSpec:
        if self.last_days is not None and (self.start or self.end):
            raise ValueError("give either start/end or last_days, not both")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                try:
                    date.fromisoformat(str(value)[:10])
                except ValueError as e:
                    raise ValueError(f"{name}: {value!r} is not an ISO date (YYYY-MM-DD)") from e
        if self.start and self.end and str(self.start)[:10] > str(self.end)[:10]:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    def resolve(self, run_date: date) -> tuple[date | None, date | None]:
        """The window as (first day, last day), both inclusive; ``None`` = open-ended.

        Args:
            run_date: the day a scheduled run maps up to (UTC calendar date).
        """
        if self.last_days is not None:
            return run_date - timedelta(days=self.last_days - 1), run_date
        first = date.fromisoformat(str(self.start)[:10]) if self.start else None
        last = date.fromisoformat(str(self.end)[:10]) if self.end else None
        return first, last

    def to_stac_datetime(self, run_date: date) -> str | None:
        """The window as a STAC ``datetime`` range (``2015-07-01/2015-09-30``), or ``None``."""
        window = self.resolve(run_date)
        if window == (None, None):
            return None
        return window_text(window)


class GridSpec(StrictModel):
    """Target grid: all modalities are resampled onto it, tile by tile."""

    resolution: float = Field(10.0, gt=0, description="pixel size in CRS units (metres for UTM)")
    crs: str = Field("auto", description="'auto' = UTM zone of the AOI centroid, or any CRS")
    # 512: measured on the bundled model (docs/jobs.md, "Tile size"): windows straddling tile
    # edges run once per process, so larger tiles save little time; they cost memory per tile
    # in flight, and too few tiles leave a core idle on small AOIs.
    tile_size: int = Field(512, ge=16, description="tile edge in pixels (without halo)")
    # 32: at least the bundled model's window - 1 (31 px), so every window a tile runs sees all
    # of its pixels: maps do not depend on the tile size, and windows straddling a tile edge
    # are the same in both tiles (run once per process, eo_fusion.models.shared_windows).
    halo: int = Field(
        32,
        ge=0,
        description="pixels read around each tile and cropped away; at least the model's "
        "inference window - 1 for seam-free maps",
    )


class ModalitySpec(StrictModel):
    """Options of one modality (the key of ``modalities`` names it: s2-l2a, s1-grd, dem, ...).

    Which keys apply depends on the modality (see the modality registry,
    :mod:`eo_fusion.modalities`, and "Modality options" below); a job file is refused when it
    sets one that does not apply (``aggregate`` on a composite, ``max_cloud`` on a DEM).
    """

    bands: list[str] | None = Field(None, description="band registry keys; default: all")
    max_cloud: float | None = Field(
        None, ge=0, le=100, description="max eo:cloud_cover (%); optical satellites only"
    )
    mode: Literal["composite", "timeseries"] = Field(
        "composite", description="median composite of clear dates, or keep every date"
    )
    aggregate: Literal["none", "monthly", "semimonthly"] = Field(
        "none", description="time-series aggregation period (timeseries mode; S2, S1)"
    )
    resolution: float | None = Field(
        None, gt=0, description="own resolution (integer multiple/fraction of the grid's)"
    )
    collections: list[str] | None = Field(
        None, description="override the catalog's collection ids for this modality"
    )
    options: dict[str, Any] | ModalityOptions = Field(
        default_factory=dict,
        description="modality-specific options, typed per modality family (see Modality options)",
    )

    @field_serializer("options")
    def _dump_options(self, value: dict[str, Any] | ModalityOptions) -> dict[str, Any]:
        # Only the options that were given: a job's hash (and run id) does not change when the
        # options become typed, and a card or record shows what the user wrote.
        if isinstance(value, ModalityOptions):
            return value.model_dump(mode="json", exclude_unset=True)
        return dict(value)


#: Error type of the modality checks (:func:`check_modalities`), formatted with its valid keys.
MODALITY_REFUSED = "modality_refused"


def _refused(
    loc: tuple[str, ...], key: str, message: str, valid: list[str], label: str
) -> InitErrorDetails:
    # The message is pre-formatted; braces would be read as template fields.
    text = message.replace("{", "(").replace("}", ")")
    error = PydanticCustomError(
        MODALITY_REFUSED, text, {"key": key, "valid": valid, "label": label}
    )
    return InitErrorDetails(type=error, loc=loc, input=key)


def _applicable_keys(mdef: ModalityDef, spec: ModalitySpec) -> list[str]:
    """The ``ModalitySpec`` keys that apply to this modality as configured."""
    skip = set()
    if not mdef.aggregates or spec.mode != "timeseries":
        skip.add("aggregate")
    if not mdef.cloud_cover:
        skip.add("max_cloud")
    return sorted(k for k in ModalitySpec.model_fields if k not in skip)


def _key_refusals(mdef: ModalityDef, name: str, spec: ModalitySpec) -> list[InitErrorDetails]:
    """Common keys set on a modality whose reader does not implement them."""
    keys = _applicable_keys(mdef, spec)
    out = []
    if spec.mode not in mdef.modes:
        why = f"mode '{spec.mode}' does not apply to {name} (its reader makes one layer)"
        out.append(_refused((name, "mode"), spec.mode, why, list(mdef.modes), "valid modes"))
    if spec.aggregate != "none" and not mdef.aggregates:
        why = f"aggregate does not apply to {name} (its reader does not aggregate periods)"
        out.append(_refused((name, "aggregate"), "aggregate", why, keys, "valid keys here"))
    elif spec.aggregate != "none" and spec.mode != "timeseries":
        why = f"aggregate '{spec.aggregate}' needs mode: timeseries ({name} is a {spec.mode})"
        out.append(_refused((name, "aggregate"), "aggregate", why, keys, "valid keys here"))
    if spec.max_cloud is not None and not mdef.cloud_cover:
        why = (
            f"max_cloud does not apply to {name} (its items carry no eo:cloud_cover, so the "
            "filter would drop every one)"
        )
        out.append(_refused((name, "max_cloud"), "max_cloud", why, keys, "valid keys here"))
    bad = [b for b in spec.bands or () if b.split(":", 1)[0] != mdef.band_family]
    if bad:
        why = f"bands {bad} are not {mdef.band_family} bands"
        valid = band_keys(mdef.band_family)
        out.append(_refused((name, "bands"), bad[0], why, valid, f"{mdef.band_family} bands"))
    return out


def _option_refusals(
    mdef: ModalityDef, name: str, given: Mapping[str, Any]
) -> list[InitErrorDetails]:
    """Options of other modalities (or of other names of this family) set on ``name``."""
    model = mdef.options
    valid = model.applicable(name)
    label = f"valid options for {name}"
    out = []
    for key in given:
        if key in valid:
            continue
        if key in model.model_fields:
            owners = ", ".join(model.only_for(key))
        else:
            owners = ", ".join(option_owners(key))
        if owners:  # a known option in the wrong place; unknown ones are left to pydantic
            why = f"option '{key}' does not apply to {name} (it is an option of {owners})"
            out.append(_refused((name, "options", key), key, why, valid, label))
    return out


def _typed_options(
    mdef: ModalityDef, name: str, options: dict[str, Any] | ModalityOptions
) -> tuple[ModalityOptions | None, list[InitErrorDetails]]:
    """``options`` validated by the family's model, or the errors (paths under ``name``)."""
    model = mdef.options
    if isinstance(options, ModalityOptions) and not isinstance(options, model):
        why = f"options of type {type(options).__name__} given to {name}"
        return None, [_refused((name, "options"), "options", why, [model.__name__], "expected")]
    given = options.model_dump(exclude_unset=True) if isinstance(options, BaseModel) else options
    errors = _option_refusals(mdef, name, given)
    refused = {str(e["loc"][-1]) for e in errors}
    try:
        typed = model.model_validate({k: v for k, v in given.items() if k not in refused})
    except ValidationError as e:
        for d in e.errors():
            ctx = dict(d.get("ctx") or {})
            if d["type"] == "extra_forbidden":
                top = len(d["loc"]) == 1
                valid = model.applicable(name) if top else _valid_keys_at(model, d["loc"])
                label = f"valid options for {name}" if top else "valid keys here"
                ctx = {"valid": valid, "label": label}
            loc = (name, "options", *d["loc"])
            errors.append(InitErrorDetails(type=d["type"], loc=loc, input=d["input"], ctx=ctx))
        return None, errors
    return (None if errors else typed), errors


def check_modalities(value: dict[str, ModalitySpec]) -> dict[str, ModalitySpec]:
    """Check each modality against the registry; return them with typed ``options``.

    Refused (exit 2, naming the key and the valid ones): an unknown modality name, a common key
    its reader does not implement (:func:`_key_refusals`), an option of another modality, and an
    unknown or invalid option.
    """
    errors: list[InitErrorDetails] = []
    out: dict[str, ModalitySpec] = {}
    for name, spec in value.items():
        mdef = find_modality(name)
        if mdef is None:
            why = f"unknown modality '{name}'"
            errors.append(_refused((name,), name, why, list(modality_names()), "known modalities"))
            continue
        errors += _key_refusals(mdef, name, spec)
        typed, option_errors = _typed_options(mdef, name, spec.options)
        errors += option_errors
        out[name] = spec.model_copy(update={"options": typed}) if typed is not None else spec
    if errors:
        raise ValidationError.from_exception_data("modalities", errors)
    return out


#: ``modalities:`` of a job or training scene: modality name -> spec, checked by the registry.
ModalityMap = Annotated[dict[str, ModalitySpec], AfterValidator(check_modalities)]


class _OneModality(StrictModel):
    modalities: ModalityMap


def modality_spec(name: str, value: ModalitySpec | Mapping[str, Any] | None = None) -> ModalitySpec:
    """One modality's spec, checked like a job file's (typed ``options``).

    Args:
        name: registry modality name (``s2-l2a``, ``dem``, ...).
        value: a spec, or its keys as a mapping; default: the modality's defaults.

    Raises:
        ConfigError: the same refusals as a job file (see :func:`check_modalities`).
    """
    data = {"modalities": {name: value if value is not None else {}}}
    try:
        return _OneModality.model_validate(data).modalities[name]
    except ValidationError as e:
        raise ConfigError(
            format_validation_error(e, _OneModality, f"modality '{name}'"),
            fix="see docs/configuration.md (Modality options)",
        ) from e


class ModelRef(StrictModel):
    """Which model to run and for what task."""

    checkpoint: ConfigPath | None = Field(
        None, description="folder with model.safetensors + model_card.json; default: bundled"
    )
    task: Literal["landcover", "crops"] = Field("landcover", description="head to run")
    batch_size: int = Field(32, ge=1, description="inference windows per forward pass")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto",
        description="where each worker runs the model: auto = CUDA when the worker sees a GPU, "
        "then Apple MPS, else the CPU; cuda/mps that the worker lacks is an error",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="autocast: auto = bf16 on GPUs that support it (else fp16) and on CPUs with "
        "native bf16 (AVX-512 BF16/AMX), fp32 on other CPUs; fp16 needs a GPU",
    )
    compile: bool = Field(
        False, description="torch.compile the model in each worker (needs a C compiler on CPUs)"
    )
    window: int | None = Field(
        None, ge=8, description="inference window edge in pixels; default: the model card's"
    )
    overlap: int | None = Field(
        None,
        ge=0,
        description="pixels a window shares with each neighbour (blended); default: the card's "
        "(bundled model: 8 px, a quarter window; half a window with `window` set and no card "
        "stride); the grid halo must be ≥ window - 1 for seam-free maps",
    )

    @model_validator(mode="after")
    def _overlap_in_window(self) -> ModelRef:
        if self.window is not None and self.overlap is not None and self.overlap >= self.window:
            raise ValueError(f"overlap {self.overlap} must be less than window {self.window}")
        return self


class OutputSpec(StrictModel):
    """Where and what to write.

    Products go to ``<dir>/<run-id>/`` where the run id is the job name plus a hash of the job
    config and resolved time window: a changed job starts a new run folder instead of mixing tiles.
    """

    dir: ConfigPath = Field(Path("out"), description="output folder (created)")
    probabilities: bool = Field(False, description="also write per-class probabilities")
    confidence: bool = Field(True, description="write the max-probability confidence band")
    stack_zarr: bool = Field(False, description="also keep the co-registered stacks as Zarr")
    blocksize: int = Field(
        256, ge=64, le=4096, description="internal COG tile edge in pixels (power of two)"
    )
    report: bool = Field(True, description="write the QA report (JSON + Markdown + quicklook PNG)")

    @model_validator(mode="after")
    def _power_of_two(self) -> OutputSpec:
        if self.blocksize & (self.blocksize - 1):
            raise ValueError(f"blocksize {self.blocksize} is not a power of two (e.g. 256, 512)")
        return self


class DaskSpec(StrictModel):
    """Where tiles run.

    Default: a LocalCluster with ``workers`` workers of ``threads_per_worker`` threads each, run as
    threads of the calling process (``processes: true`` starts separate worker processes). With
    ``scheduler`` set, tiles run on that existing cluster and the LocalCluster options are ignored.
    """

    scheduler: str | None = Field(
        None, description="address of an existing scheduler (tcp://host:8786); default: local"
    )
    workers: int = Field(1, ge=1, description="LocalCluster workers")
    threads_per_worker: int = Field(2, ge=1, description="threads per LocalCluster worker")
    processes: bool = Field(
        False,
        description="LocalCluster workers as separate processes (default: threads of the "
        "eo-fusion process, measured faster on 2 cores; see docs/jobs.md)",
    )
    memory_limit: str = Field("4GiB", description="memory limit per LocalCluster worker")
    wave_size: int = Field(8, ge=1, description="max tiles submitted at once (bounds memory)")


class JobSpec(StrictModel):
    """A mapping job: what to map, where, when, with which model, and where to write."""

    name: str = Field(
        description="job name, used in output file names and logs",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    )
    description: str = Field("", description="what the job maps (shown in reports and STAC)")
    catalog: str = Field("sample", description="catalog name (catalogs/*.yaml) or path to one")
    aoi: AOISpec
    # Section defaults are validated from `{}` (not built directly) so that their paths resolve
    # against the config file like paths that are given.
    time: TimeSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    grid: GridSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    modalities: ModalityMap = Field(description="modality name -> options")
    model: ModelRef = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    output: OutputSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    dask: DaskSpec = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    on_failure: Literal["stop", "continue"] = Field(
        "continue", description="stop at the first failed tile, or finish the others"
    )
    retries: int = Field(2, ge=0, description="retries per tile for transient errors")
    strict: bool = Field(
        False,
        description="fail the run (exit 1, no products) when the inputs are not what they "
        "seem: a truncated search, skipped items, dates without clear optical pixels, pixels "
        "mapped from partial inputs, or nodata values that disagree with the data",
    )


def load_job(path: Path) -> JobSpec:
    """Load and validate a job YAML file."""
    return load_spec(JobSpec, path)
