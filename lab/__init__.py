"""The strategy lab: screening and champion/challenger results, simulation and reports.

- `lab.simulate` runs a synthetic portfolio (`lab.scenario`, `lab.portfolio`, `lab.behaviour`)
  through the decider (`models.lifecycle`) on a simulated clock, without Temporal, with the
  real conduct guard (`models.conduct.decide`) over each person's contacts across their loans;
- `lab.live` reads the same per-loan records (`lab.results.LoanResult`) from the database of
  real loans;
- `lab.figures` and `lab.report` turn either into the figures, CSV files and report.html.

Never imports Temporal, workflows, activities or the client: a simulation runs the decider's
pure functions and nothing else.
"""
