"""Named prompt styles: schema + question -> chat messages.

A style only decides the *messages* (roles and text). Turning messages into the
model's token sequence is the backend's job, with the chat template the model
ships, so the same style works on any chat model and training uses exactly the
messages inference uses.

Every style puts the schema before the question, so prompts for one database
share a prefix that the backend can cache.

What a user taught about the database (:mod:`slimsql.knowledge`) joins in two places: its
notes follow the schema, inside the cached prefix, as they hold for every question; the
examples chosen for this question (``examples``) come after it, just before the question.
With neither, a prompt is exactly what it was before teaching existed.

A follow-up question ("and only in 2024?") is rendered as a conversation: the
first earlier question in the style's own turn (after the schema), each earlier
answer's SQL as the model's turn, and every later question in the style's
``followup`` turn. The schema stays first, so follow-ups reuse the cached prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

from .backends import Message
from .errors import InputError
from .schema import Schema, render_compact, render_create

#: Earlier turns a follow-up question sees (the most recent ones): enough for "and only in
#: 2024?" chains, few enough that a long session does not crowd the schema out of the context.
MAX_HISTORY = 3


class Turn(NamedTuple):
    """An earlier question of the same conversation and the SQL that answered it."""

    question: str
    sql: str


_DIALECT_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "duckdb": "DuckDB", "mysql": "MySQL"}


@dataclass(frozen=True)
class PromptStyle:
    name: str
    description: str
    user: str  # template with {schema}, {question}, {dialect}, {values}, {examples}
    system: str | None = None  # same fields
    schema_format: Callable[[Schema], str] = render_create
    comment: str = ""  # prefix of the lines of the values block ("-- " where the prompt reads as SQL)
    #: the user turn of a follow-up question (same fields; the schema is already in the conversation)
    followup: str = "{examples}{values}Follow-up question (it builds on the previous question and query): {question}"

    def messages(self, schema: Schema | str, question: str, dialect: str = "sqlite",
                 values: str = "", history: Sequence[Turn] = (), notes: Sequence[str] = (),
                 examples: Sequence[tuple[str, str]] = ()) -> list[Message]:
        """Render the style. ``schema`` may be a Schema or already-rendered text; ``values``
        are lines naming database values that match the question (value linking), shown
        after the schema so prompts for one database keep sharing the schema prefix.
        ``history``: earlier turns of the conversation, oldest first (the last
        :data:`MAX_HISTORY` are shown). ``notes``: what holds for every question on this
        database (after the schema); ``examples``: (question, SQL) demonstrations for this
        question, shown before it."""
        fields = {
            "schema": (schema if isinstance(schema, str) else self.schema_format(schema)) + self.notes_block(notes),
            "dialect": _DIALECT_NAMES.get(dialect, dialect),
        }
        history = list(history)[-MAX_HISTORY:]
        asked = [(turn.question, "") for turn in history] + [(question, values)]
        out: list[Message] = []
        if self.system:
            out.append({"role": "system", "content": self.system.format(question=asked[0][0].strip(),
                                                                        values="", **fields)})
        for i, (text, linked) in enumerate(asked):
            template = self.user if i == 0 else self.followup
            shown = self._examples(examples) if i == len(asked) - 1 else ""  # with the question they are for
            out.append({"role": "user", "content": template.format(question=text.strip(), examples=shown,
                                                                   values=self._values(linked), **fields)})
            if i < len(history):
                out.append({"role": "assistant", "content": history[i].sql.strip()})
        return out

    def notes_block(self, notes: Sequence[str]) -> str:
        """The notes as they follow the schema ("" for none)."""
        lines = [" ".join(n.split()) for n in notes if n.strip()]
        if not lines:
            return ""
        return f"\n\n{self.comment}Notes on this database:\n" + "\n".join(f"{self.comment}- {n}" for n in lines)

    def _examples(self, examples: Sequence[tuple[str, str]]) -> str:
        if not examples:
            return ""
        block = [f"{self.comment}Examples of questions on this database and their SQL:"]
        for question, sql in examples:
            block += [f"{self.comment}Question: {' '.join(question.split())}", sql.strip().rstrip(";").strip() + ";"]
        return "\n".join(block) + "\n\n"

    def _values(self, values: str) -> str:
        lines = [line for line in values.splitlines() if line.strip()]
        if not lines:
            return ""
        block = [f"{self.comment}Values in the database that match the question:"]
        block += [f"{self.comment}{line}" for line in lines]
        return "\n".join(block) + ("\n" if self.comment else "\n\n")


STYLES: dict[str, PromptStyle] = {
    style.name: style
    for style in (
        PromptStyle(
            name="strict-chatml",
            description="The 350M QLoRA reference: a ChatML system turn that demands raw SQL only.",
            system="You are a SQL translation engine. Return ONLY raw SQL. Schema: {schema}",
            user="{examples}{values}{question}",
        ),
        PromptStyle(
            name="generate-sql",
            description="The Qwen3-4B full-SFT reference: one user turn, instruction first.",
            user="Generate SQL from the given schema and question. Output SQL only.\n\n"
                 "Schema:\n{schema}\n\n{examples}{values}Question: {question}",
        ),
        PromptStyle(
            name="sqlite-expert",
            description="Schema as DDL, question as a SQL comment: the form code models see most.",
            system="You are a {dialect} expert. Answer with a single {dialect} query and nothing else.",
            user="{schema}\n\n{examples}{values}-- Using valid {dialect}, answer the following question for the tables "
                 "provided above.\n-- Question: {question}",
            comment="-- ",
            followup="{examples}{values}-- Follow-up question (it builds on the previous question and query): {question}",
        ),
        PromptStyle(
            name="compact",
            description="strict-chatml with one line per table, for very wide schemas or short contexts.",
            system="You are a SQL translation engine. Return ONLY raw SQL. Schema: {schema}",
            user="{examples}{values}{question}",
            schema_format=render_compact,
        ),
    )
}
DEFAULT_STYLE = "sqlite-expert"


def get_style(name: str) -> PromptStyle:
    try:
        return STYLES[name]
    except KeyError:
        raise InputError(f"unknown prompt style {name!r}; styles: {', '.join(STYLES)}") from None
