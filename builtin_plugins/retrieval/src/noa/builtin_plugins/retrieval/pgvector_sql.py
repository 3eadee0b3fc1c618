"""How the ``pgvector`` driver lays collections out in PostgreSQL, and the SQL it runs.

Everything lives in one schema (``retrieval.pgvector_schema``, ``noa_vectors``):

- ``"noa:collections"``, the catalog: a row per collection with its dimension, distance,
  declared fields in order and vector index. The ``:`` keeps the name (and the names of
  every index the driver makes) apart from any collection's name.
- a table per collection, named as the collection: ``id text PRIMARY KEY``,
  ``embedding vector(dim)``, ``payload json``, and per declared field a generated column
  ``f0``, ``f1`` ... (``bigint``, ``double precision``, ``text`` or ``boolean``; NULL where
  the payload lacks the field) with a btree index, so a filter is plain SQL over indexed
  columns. ``json`` rather than ``jsonb`` keeps a payload's text as written: ``1e16``
  comes back a float, not the integer jsonb would print.
- ``cosine`` vectors are stored normalised, so cosine and dot are both searched with
  pgvector's negative inner product ``<#>`` (score ``-d``) and euclid with ``<->``
  (score ``d``); a zero vector scores 0 rather than NaN.

Filters (already checked by the port's ``validate_filter``) become SQL with every value a
parameter. An integer field compares with integers (``{"lte": 1.5}`` is ``<= 1``, ``2.5``
equals nothing), a float field with doubles; a condition no stored value can meet makes
:func:`where_clause` return ``None``, and the search is empty without asking the database.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from noa.plugin_sdk.ports.vectors import Distance, FieldType, as_int64, integer_range
from numpy.typing import NDArray

__all__ = [
    "CATALOG",
    "HNSW_MAX_DIM",
    "IndexKind",
    "Layout",
    "catalog_ddl",
    "decode_vector",
    "encode_vector",
    "ident",
    "score_of",
    "search_sql",
    "table_ddl",
    "upsert_sql",
    "vector_rows",
    "where_clause",
]

IndexKind = Literal["none", "hnsw"]

CATALOG = "noa:collections"
# pgvector indexes vectors of at most 2,000 dimensions; wider collections are scanned.
HNSW_MAX_DIM = 2000

_FLOAT_MAX = 1.7976931348623157e308
_COLUMN_TYPES: dict[str, str] = {
    "keyword": "text",
    "integer": "bigint",
    "float": "double precision",
    "bool": "boolean",
}
_PARAM_TYPES: dict[str, str] = {
    "keyword": "text",
    "integer": "bigint",
    "float": "float8",
    "bool": "boolean",
}


def ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Layout:
    """One collection as the catalog describes it, and where its parts are in SQL."""

    __slots__ = ("columns", "dim", "distance", "fields", "index", "name", "table")

    def __init__(
        self,
        schema: str,
        name: str,
        dim: int,
        distance: Distance,
        fields: Sequence[tuple[str, FieldType]],
        index: IndexKind,
    ) -> None:
        self.name = name
        self.dim = dim
        self.distance = distance
        self.fields: dict[str, FieldType] = dict(fields)
        # Declared fields by position: any field name fits, and none meets id/payload.
        self.columns = {field: f"f{n}" for n, (field, _) in enumerate(fields)}
        self.index = index
        self.table = f"{ident(schema)}.{ident(name)}"


def catalog_ddl(schema: str) -> list[str]:
    """Statements that make the schema and the catalog if they are missing."""
    return [
        f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}",
        f"""CREATE TABLE IF NOT EXISTS {ident(schema)}.{ident(CATALOG)} (
            id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            name text PRIMARY KEY,
            dim integer NOT NULL,
            distance text NOT NULL,
            fields jsonb NOT NULL,
            vector_index text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )""",
    ]


def table_ddl(layout: Layout, number: int, hnsw: tuple[int, int] = (16, 64)) -> list[str]:
    """Statements that make a collection's table and indexes; ``number`` is its catalog
    id, which names the indexes (index names share the schema with the tables)."""
    columns = [
        "id text NOT NULL",
        f"embedding vector({layout.dim}) NOT NULL",
        "payload json NOT NULL",
    ]
    for field, kind in layout.fields.items():
        value = f"(payload ->> {_literal(field)})"
        expression = value if kind == "keyword" else f"({value}::{_COLUMN_TYPES[kind]})"
        column = ident(layout.columns[field])
        columns.append(f"{column} {_COLUMN_TYPES[kind]} GENERATED ALWAYS AS {expression} STORED")
    prefix = f"{layout.name[:32]}:{number}"
    columns.append(f"CONSTRAINT {ident(prefix + ':pkey')} PRIMARY KEY (id)")
    statements = [f"CREATE TABLE {layout.table} ({', '.join(columns)})"]
    for column in layout.columns.values():
        statements.append(
            f"CREATE INDEX {ident(f'{prefix}:{column}')} ON {layout.table} ({ident(column)})"
        )
    if layout.index == "hnsw":
        ops = "vector_l2_ops" if layout.distance == "euclid" else "vector_ip_ops"
        m, ef_construction = hnsw
        statements.append(
            f"CREATE INDEX {ident(prefix + ':hnsw')} ON {layout.table} USING hnsw "
            f"(embedding {ops}) WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
        )
    return statements


def upsert_sql(layout: Layout) -> str:
    """Insert or replace rows given as three arrays: ids, vectors, payloads."""
    return (
        f"INSERT INTO {layout.table} (id, embedding, payload) "
        "SELECT * FROM unnest($1::text[], $2::vector[], $3::json[]) "
        "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, payload = EXCLUDED.payload"
    )


def search_sql(layout: Layout, where: str, *, exact: bool) -> str:
    """Top ``$2`` rows by distance ``d`` to ``$1`` that meet ``where``.

    ``exact`` adds ``+ 0`` to the distance, an ordering no vector index provides, so the
    planner scans every row the filter keeps (through the field indexes if selective).
    Otherwise an HNSW index may answer, and its relaxed iterative scan may return rows
    slightly out of order while the planner trusts the index's order: the caller sorts.
    """
    op = "<->" if layout.distance == "euclid" else "<#>"
    distance = f"(embedding {op} $1) + 0" if exact else f"embedding {op} $1"
    condition = f" WHERE {where}" if where else ""
    return f"SELECT id, payload, {distance} AS d FROM {layout.table}{condition} ORDER BY d LIMIT $2"


def score_of(distance: Distance, d: float) -> float:
    """The port's score for pgvector's distance ``d`` (see the module docstring)."""
    return float(d) if distance == "euclid" else -float(d)


# -- filters ------------------------------------------------------------------------------


def where_clause(
    layout: Layout, filter: Mapping[str, Any] | None, first_param: int
) -> tuple[str, list[Any]] | None:
    """SQL for a checked filter, its parameters numbered from ``$first_param``; ``None``
    when one condition can't hold for any value its field may store."""
    parts: list[str] = []
    params: list[Any] = []
    for name, condition in (filter or {}).items():
        kind = layout.fields[name]
        column = ident(layout.columns[name])

        def param(value: Any, suffix: str = "", kind: FieldType = kind) -> str:
            params.append(value)
            return f"${first_param + len(params) - 1}::{_PARAM_TYPES[kind]}{suffix}"

        if isinstance(condition, Mapping) and "any" not in condition:
            part = _range(column, kind, condition, param)
        else:
            wanted = list(condition["any"]) if isinstance(condition, Mapping) else [condition]
            values = [v for v in (_stored_value(kind, w) for w in wanted) if v is not None]
            if not values:
                part = None
            elif len(values) == 1:
                part = f"{column} = {param(values[0])}"
            else:
                part = f"{column} = ANY({param(values, '[]')})"
        if part is None:
            return None
        parts.append(part)
    return " AND ".join(parts), params


def _stored_value(kind: FieldType, value: Any) -> Any:
    """The value as the field's column holds it, or ``None`` when no stored value can
    equal it."""
    if kind == "keyword":
        return None if "\x00" in value else value  # text can't hold NUL: never stored
    if kind == "bool":
        return value
    if kind == "integer":
        return as_int64(value)
    if isinstance(value, int) and abs(value) > _FLOAT_MAX:
        return None  # a float field holds only float64-sized values
    return float(value)


def _range(
    column: str, kind: FieldType, condition: Mapping[str, Any], param: Callable[[Any], str]
) -> str | None:
    if kind == "float":
        # Stored numbers fit a float64, so clamping a huge integer bound keeps its meaning.
        ops = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
        return " AND ".join(
            f"{column} {ops[op]} {param(float(max(-_FLOAT_MAX, min(_FLOAT_MAX, bound))))}"
            for op, bound in sorted(condition.items())
        )
    # An integer column: the bounds become the inclusive integer range they allow.
    bounds = integer_range(condition)
    if bounds is None:
        return None
    return f"{column} BETWEEN {param(bounds[0])} AND {param(bounds[1])}"


# -- the vector type's binary form --------------------------------------------------------


def encode_vector(value: Any) -> bytes:
    """pgvector's binary ``vector``: dimension and a zero as uint16, then big-endian
    float32s. Rows from :func:`vector_rows` are already in that form."""
    if isinstance(value, bytes):
        return value
    values = np.asarray(value, dtype=">f4")
    return struct.pack(">HH", values.shape[0], 0) + values.tobytes()


def decode_vector(data: bytes) -> NDArray[np.float32]:
    dim = struct.unpack_from(">H", data)[0]
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


def vector_rows(matrix: NDArray[np.float64]) -> list[bytes]:
    """Each row of ``matrix`` in pgvector's binary form, ready to send."""
    if not len(matrix):
        return []
    header = struct.pack(">HH", matrix.shape[1], 0)
    big_endian = matrix.astype(">f4")
    return [header + row.tobytes() for row in big_endian]
