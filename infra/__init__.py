"""The plumbing every process shares, and nothing of the domain: settings (`infra.settings`),
the one data converter and `connect` (`infra.temporal`), payload encryption and its codec server
(`infra.codec`, `infra.codec_server`), log masking (`infra.logs`), the portfolio's search
attributes (`infra.search_attributes`), the daily scan's Temporal Schedule (`infra.schedules`),
activity retry and timeout options (`infra.options`) and process helpers (`infra.process`).

May import `models` only (never workflows, activities, client, db, ops or the entry points);
workflows import `infra.options` and `infra.search_attributes`, so this package's __init__
imports nothing."""
