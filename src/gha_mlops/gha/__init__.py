"""GitHub Actions runtime I/O: the one module that writes workflow commands and files, and
the one that makes user text safe for the log, Markdown and plot titles (:mod:`.safe`)."""

from gha_mlops.gha.runtime import Actions, escape_data, escape_property
from gha_mlops.gha.safe import (
    html_text,
    log_block,
    log_json,
    log_text,
    markdown_code,
    markdown_name,
    markdown_quote,
    markdown_text,
    plot_title,
)

__all__ = ["Actions", "escape_data", "escape_property", "html_text", "log_block", "log_json",
           "log_text", "markdown_code", "markdown_name", "markdown_quote", "markdown_text",
           "plot_title"]
