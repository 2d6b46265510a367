-- The schema an older version of the project (commit 4692e0a, before the audit hash chain and
-- the contact budget) created with SQLModel.metadata.create_all on postgresql; no alembic_version.
-- Rendered from that commit's db/tables.py; tests/db/test_migrations.py upgrades it.

CREATE TABLE audit (
	id SERIAL NOT NULL, 
	key VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	actor VARCHAR NOT NULL, 
	action VARCHAR NOT NULL, 
	stage VARCHAR NOT NULL, 
	detail TEXT NOT NULL, 
	recorded_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (key)
);

CREATE INDEX ix_audit_loan_id ON audit (loan_id);

CREATE TABLE borrowers (
	borrower_id VARCHAR NOT NULL, 
	name VARCHAR NOT NULL, 
	phone VARCHAR NOT NULL, 
	email VARCHAR NOT NULL, 
	address VARCHAR NOT NULL, 
	timezone VARCHAR NOT NULL, 
	language VARCHAR NOT NULL, 
	PRIMARY KEY (borrower_id)
);

CREATE TABLE cases (
	id SERIAL NOT NULL, 
	case_id VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	amount NUMERIC(20, 6) NOT NULL, 
	currency VARCHAR NOT NULL, 
	document TEXT NOT NULL, 
	status VARCHAR NOT NULL, 
	filed_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (case_id)
);

CREATE INDEX ix_cases_loan_id ON cases (loan_id);

CREATE TABLE ledger (
	id SERIAL NOT NULL, 
	key VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	component VARCHAR NOT NULL, 
	amount NUMERIC(20, 6) NOT NULL, 
	currency VARCHAR NOT NULL, 
	at TIMESTAMP WITH TIME ZONE NOT NULL, 
	reference VARCHAR NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (key)
);

CREATE INDEX ix_ledger_loan_id ON ledger (loan_id);

CREATE TABLE outbox (
	id SERIAL NOT NULL, 
	key VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	channel VARCHAR NOT NULL, 
	template VARCHAR NOT NULL, 
	language VARCHAR NOT NULL, 
	recipient VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	body TEXT NOT NULL, 
	status VARCHAR NOT NULL, 
	provider_ref VARCHAR NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	sent_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (id), 
	UNIQUE (key)
);

CREATE INDEX ix_outbox_loan_id ON outbox (loan_id);

CREATE TABLE placements (
	id SERIAL NOT NULL, 
	placement_id VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	agency VARCHAR NOT NULL, 
	amount NUMERIC(20, 6) NOT NULL, 
	currency VARCHAR NOT NULL, 
	placed_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	recall_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	recalled_at TIMESTAMP WITH TIME ZONE, 
	recall_reason VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (placement_id)
);

CREATE INDEX ix_placements_loan_id ON placements (loan_id);

CREATE TABLE tasks (
	id SERIAL NOT NULL, 
	task_id VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	workflow_id VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	queue VARCHAR NOT NULL, 
	template VARCHAR NOT NULL, 
	attempt INTEGER NOT NULL, 
	brief TEXT NOT NULL, 
	status VARCHAR NOT NULL, 
	outcome VARCHAR NOT NULL, 
	note VARCHAR NOT NULL, 
	recording_ref VARCHAR NOT NULL, 
	due_by TIMESTAMP WITH TIME ZONE NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	closed_at TIMESTAMP WITH TIME ZONE, 
	closed_by VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (task_id)
);

CREATE INDEX ix_tasks_loan_id ON tasks (loan_id);

CREATE INDEX ix_tasks_queue ON tasks (queue);

CREATE TABLE loans (
	loan_id VARCHAR NOT NULL, 
	borrower_id VARCHAR NOT NULL, 
	currency VARCHAR NOT NULL, 
	principal NUMERIC(20, 6) NOT NULL, 
	interest NUMERIC(20, 6) NOT NULL, 
	fees NUMERIC(20, 6) NOT NULL, 
	penalties NUMERIC(20, 6) NOT NULL, 
	due_date DATE NOT NULL, 
	product VARCHAR NOT NULL, 
	policy VARCHAR NOT NULL, 
	workflow_id VARCHAR, 
	stage VARCHAR NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (loan_id), 
	FOREIGN KEY(borrower_id) REFERENCES borrowers (borrower_id)
);

CREATE INDEX ix_loans_borrower_id ON loans (borrower_id);

CREATE INDEX ix_loans_due_date ON loans (due_date);
