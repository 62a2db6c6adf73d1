"""What a step's SQL does, read from PostgreSQL's own parse tree (pglast, which
is libpg_query: the server's grammar), not from patterns over its text. So a
statement is understood in every spelling the server accepts: keywords in any
case, optional words left out (ALTER TABLE t DROP c), IF EXISTS or not, names
schema-qualified or quoted, several names or commands in one statement,
several statements in one string.

Not read: statements inside a DO block or a function body. The parser hands a
block's body over as a string of PL/pgSQL, which only runs on the server;
rollbacks keep their drops outside DO blocks (tests/test_conventions.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pglast import ast, parse_sql
from pglast.enums import AlterTableType, DropBehavior, ObjectType
from pglast.parser import ParseError
from pglast.stream import RawStream, maybe_double_quote_name


class Unreadable(ValueError):
    """SQL that PostgreSQL's parser refuses; str() is the parser's one line."""


def statements(sql: str) -> list:
    """The statements of sql, as parse-tree nodes, in order."""
    try:
        return [raw.stmt for raw in parse_sql(sql)]
    except ParseError as exc:
        raise Unreadable(str(exc).splitlines()[0]) from None


@dataclass(frozen=True)
class Relation:
    """A table as a statement names it: schema None when it is not qualified,
    which the server resolves along search_path, as to_regclass does."""

    schema: str | None
    name: str

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.name,) if self.schema is None else (self.schema, self.name)

    @property
    def regclass(self) -> str:
        """The name as to_regclass() reads it: every part quoted, so that
        a name's case and spaces are its own."""
        return ".".join('"' + part.replace('"', '""') + '"' for part in self.parts)

    def __str__(self) -> str:
        return ".".join(shown(part) for part in self.parts)


def shown(name: str) -> str:
    """A name as a person would write it in SQL: quoted only where it must be."""
    return maybe_double_quote_name(name)


def _relation(names) -> Relation:
    """A Relation from a DROP's list of String nodes ([catalog.][schema.]name)."""
    parts = [n.sval for n in names]
    return Relation(parts[-2] if len(parts) > 1 else None, parts[-1])


def _range_var(rv: ast.RangeVar) -> Relation:
    return Relation(rv.schemaname, rv.relname)


@dataclass(frozen=True)
class TypeChange:
    """ALTER TABLE table ALTER [COLUMN] column [SET DATA] TYPE type [USING ...]."""

    table: Relation
    column: str
    type_sql: str  # the new type as SQL (to_regtype reads it), e.g. varchar(10)[]
    modifiers: tuple | None  # its integer modifiers, (10,) for varchar(10); None when it has none
    rewrites: bool  # USING: the values are computed anew, whatever the types


@dataclass
class Drops:
    """What statements remove that can hold stored data, in the order met."""

    tables: list[Relation] = field(default_factory=list)
    columns: list[tuple[Relation, str]] = field(default_factory=list)
    type_changes: list[TypeChange] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    # (table, with CASCADE) whose rows a TRUNCATE or a DELETE removes; a
    # TRUNCATE ... CASCADE empties the tables that reference it too
    emptied: list[tuple[Relation, bool]] = field(default_factory=list)
    # types and domains dropped with CASCADE, which drops every column of them
    cascaded_types: list[Relation] = field(default_factory=list)

    def add(self, other: Drops) -> None:
        for mine, theirs in ((self.tables, other.tables), (self.columns, other.columns),
                             (self.type_changes, other.type_changes), (self.schemas, other.schemas),
                             (self.emptied, other.emptied), (self.cascaded_types, other.cascaded_types)):
            mine += [item for item in theirs if item not in mine]


def drops(sql: str) -> Drops:
    """The tables, columns and schemas that sql drops, the columns whose type
    it changes, the tables it empties (TRUNCATE, DELETE) and the types it
    drops with CASCADE. (Views and materialized views hold no data of their
    own; a DELETE inside a WITH is not read.)"""
    found = Drops()
    for stmt in statements(sql):
        if isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_TABLE:
            found.add(Drops(tables=[_relation(names) for names in stmt.objects]))
        elif isinstance(stmt, ast.DropStmt) and stmt.removeType == ObjectType.OBJECT_SCHEMA:
            found.add(Drops(schemas=[name.sval for name in stmt.objects]))
        elif (isinstance(stmt, ast.DropStmt) and stmt.removeType in (ObjectType.OBJECT_TYPE, ObjectType.OBJECT_DOMAIN)
              and stmt.behavior == DropBehavior.DROP_CASCADE):
            found.add(Drops(cascaded_types=[_relation(type_name.names) for type_name in stmt.objects]))
        elif isinstance(stmt, ast.TruncateStmt):
            cascade = stmt.behavior == DropBehavior.DROP_CASCADE
            found.add(Drops(emptied=[(_range_var(rv), cascade) for rv in stmt.relations]))
        elif isinstance(stmt, ast.DeleteStmt):
            found.add(Drops(emptied=[(_range_var(stmt.relation), False)]))
        elif isinstance(stmt, ast.AlterTableStmt) and stmt.objtype == ObjectType.OBJECT_TABLE:
            table = _range_var(stmt.relation)
            for cmd in stmt.cmds:
                if cmd.subtype == AlterTableType.AT_DropColumn:
                    found.add(Drops(columns=[(table, cmd.name)]))
                elif cmd.subtype == AlterTableType.AT_AlterColumnType:
                    found.add(Drops(type_changes=[_type_change(table, cmd)]))
    return found


def _type_change(table: Relation, cmd: ast.AlterTableCmd) -> TypeChange:
    type_name = cmd.def_.typeName
    modifiers = tuple(m.val.ival if isinstance(m, ast.A_Const) and isinstance(m.val, ast.Integer) else None
                      for m in type_name.typmods or ())
    return TypeChange(table, cmd.name, RawStream()(type_name), modifiers or None, cmd.def_.raw_default is not None)


def _single(sql: str, kind: type):
    """The statement of sql when sql is one statement of that kind, else None."""
    try:
        found = statements(sql)
    except Unreadable:
        return None
    return found[0] if len(found) == 1 and isinstance(found[0], kind) else None


def created_index(sql: str) -> str | None:
    """The index's name, when sql is one CREATE INDEX CONCURRENTLY IF NOT EXISTS name."""
    stmt = _single(sql, ast.IndexStmt)
    return stmt.idxname if stmt and stmt.concurrent and stmt.if_not_exists else None


def indexed_table(sql: str) -> str | None:
    """The table of one CREATE INDEX statement, as it names it; else None."""
    stmt = _single(sql, ast.IndexStmt)
    return str(_range_var(stmt.relation)) if stmt else None


def dropped_index(sql: str) -> str | None:
    """The index's name, when sql is one DROP INDEX CONCURRENTLY IF EXISTS name
    of one index, named without its schema (the steps name indexes so)."""
    stmt = _single(sql, ast.DropStmt)
    if not (stmt and stmt.removeType == ObjectType.OBJECT_INDEX and stmt.concurrent and stmt.missing_ok
            and len(stmt.objects) == 1 and len(stmt.objects[0]) == 1):
        return None
    return stmt.objects[0][0].sval


def added_constraint(sql: str) -> tuple[str, str] | None:
    """(table, constraint), when sql is one ALTER TABLE table ADD CONSTRAINT
    constraint ... NOT VALID, and nothing else."""
    stmt = _single(sql, ast.AlterTableStmt)
    if not (stmt and stmt.objtype == ObjectType.OBJECT_TABLE and len(stmt.cmds) == 1):
        return None
    cmd = stmt.cmds[0]
    if cmd.subtype != AlterTableType.AT_AddConstraint or not cmd.def_.conname or not cmd.def_.skip_validation:
        return None
    return str(_range_var(stmt.relation)), cmd.def_.conname


def drops_constraint(sql: str, name: str) -> bool:
    """Whether sql has an ALTER TABLE ... DROP CONSTRAINT IF EXISTS name."""
    try:
        found = statements(sql)
    except Unreadable:
        return False
    return any(cmd.subtype == AlterTableType.AT_DropConstraint and cmd.missing_ok and cmd.name == name
               for stmt in found if isinstance(stmt, ast.AlterTableStmt) for cmd in stmt.cmds)
