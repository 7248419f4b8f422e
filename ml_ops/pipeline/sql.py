"""A pipeline's SQL as it will run: comments dropped, colons inside literals escaped, parameters found.

SQLAlchemy's ``text()`` binds every ``:name`` it sees, including one inside a comment or a string
literal (a comment that said ":start and :end" once broke extract with "Incorrect number of bindings").
sqlparse's lexer (already a dependency through Airflow's common-sql provider) tells comments and
literals apart; what is left is handed to the same ``text()`` parser extract uses, so the config check
finds exactly the parameters extract will bind.
"""

from __future__ import annotations

REQUIRED_PARAMS = {"start", "end"}


def prepare(sql: str) -> str:
    """The SQL extract runs: comments replaced by a space, ``:`` escaped inside quoted strings/names."""
    import sqlparse
    from sqlparse import tokens as T

    out = []
    for token in sqlparse.parse(sql)[0].flatten() if sql.strip() else []:
        if token.ttype in T.Comment:
            out.append("\n" if token.value.endswith("\n") else " ")
        elif token.ttype in T.Literal.String:  # 'text' and "quoted names"
            out.append(token.value.replace(":", r"\:"))  # SQLAlchemy's escape for a literal colon
        else:
            out.append(token.value)
    return "".join(out).strip()


def bound_parameters(sql: str) -> set[str]:
    """Names SQLAlchemy will bind in ``prepare(sql)``."""
    from sqlalchemy import text

    return set(text(prepare(sql)).compile().params)


def check(sql: str) -> None:
    """ValueError naming what is wrong unless the query binds exactly :start and :end."""
    found = bound_parameters(sql)
    if not prepare(sql):
        raise ValueError("the SQL file is empty (or only comments)")
    missing, extra = REQUIRED_PARAMS - found, found - REQUIRED_PARAMS
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"does not bind {sorted(':' + m for m in missing)}")
        if extra:
            parts.append(
                f"binds unknown parameter(s) {sorted(':' + e for e in extra)} (only :start and :end are given)"
            )
        raise ValueError(
            "; ".join(parts) + " (parameters are read the way extract runs the query: comments and quoted text ignored)"
        )
