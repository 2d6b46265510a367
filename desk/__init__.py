"""The collectors' desk: the web pages where people work their queue, talk to borrowers within
the conduct rules and record what happened. Server-rendered HTML (Jinja2 templates in
`desk/templates/`, htmx and a style sheet vendored in `desk/static/`), mounted on the API's app
under /desk (`desk.app.mount`, called by `api.create_app`).

No business rule lives here: every request goes through the API's own functions (`api.work`:
claim, outcome, negotiation) in the signed-in user's name, with the API's access rules
(`api.auth`); what the guard would answer is the pure rule of `models.conduct` over the
person's contacts; the policy's limits are `models.offer_limits`. Modules: `app` (mount),
`state` (shared state, who is signed in, rendering), `sessions` (signed cookies, CSRF), `users`
(accounts, argon2, lock-out), `signin`, `queue`, `loan`, `supervisor` (the pages), `contact`
(the guard's preview), `marks` (what the queue orders by), `i18n` (Chinese and English).
Never imports activities or the entry points."""
