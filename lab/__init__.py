"""Reserved for the strategy lab (next issue): running policies against simulated loans with
the decider (`models.lifecycle`) on a simulated clock, without Temporal; reads policy files
through `infra.loaders`. May import `models` and `infra`; never the client, activities,
workflows, db or the entry points. Empty until then."""
