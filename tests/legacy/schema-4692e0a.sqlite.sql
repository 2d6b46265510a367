-- The schema an older version of the project (commit 4692e0a, before the audit hash chain and
-- the contact budget) created with SQLModel.metadata.create_all on sqlite; no alembic_version.
-- Rendered from that commit's db/tables.py; tests/db/test_migrations.py upgrades it.

CREATE TABLE audit (
	id INTEGER NOT NULL, 
	"key" VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR NOT NULL, 
	action VARCHAR NOT NULL, 
	stage VARCHAR NOT NULL, 
	detail TEXT NOT NULL, 
	recorded_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
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
	id INTEGER NOT NULL, 
	case_id VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	amount VARCHAR(40) NOT NULL, 
	currency VARCHAR NOT NULL, 
	document TEXT NOT NULL, 
	status VARCHAR NOT NULL, 
	filed_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (case_id)
);

CREATE INDEX ix_cases_loan_id ON cases (loan_id);

CREATE TABLE ledger (
	id INTEGER NOT NULL, 
	"key" VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	component VARCHAR NOT NULL, 
	amount VARCHAR(40) NOT NULL, 
	currency VARCHAR NOT NULL, 
	at DATETIME NOT NULL, 
	reference VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);

CREATE INDEX ix_ledger_loan_id ON ledger (loan_id);

CREATE TABLE outbox (
	id INTEGER NOT NULL, 
	"key" VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	channel VARCHAR NOT NULL, 
	template VARCHAR NOT NULL, 
	language VARCHAR NOT NULL, 
	recipient VARCHAR NOT NULL, 
	subject VARCHAR NOT NULL, 
	body TEXT NOT NULL, 
	status VARCHAR NOT NULL, 
	provider_ref VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE ("key")
);

CREATE INDEX ix_outbox_loan_id ON outbox (loan_id);

CREATE TABLE placements (
	id INTEGER NOT NULL, 
	placement_id VARCHAR NOT NULL, 
	loan_id VARCHAR NOT NULL, 
	agency VARCHAR NOT NULL, 
	amount VARCHAR(40) NOT NULL, 
	currency VARCHAR NOT NULL, 
	placed_at DATETIME NOT NULL, 
	recall_at DATETIME NOT NULL, 
	recalled_at DATETIME, 
	recall_reason VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (placement_id)
);

CREATE INDEX ix_placements_loan_id ON placements (loan_id);

CREATE TABLE tasks (
	id INTEGER NOT NULL, 
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
	due_by DATETIME NOT NULL, 
	created_at DATETIME NOT NULL, 
	closed_at DATETIME, 
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
	principal VARCHAR(40) NOT NULL, 
	interest VARCHAR(40) NOT NULL, 
	fees VARCHAR(40) NOT NULL, 
	penalties VARCHAR(40) NOT NULL, 
	due_date DATE NOT NULL, 
	product VARCHAR NOT NULL, 
	policy VARCHAR NOT NULL, 
	workflow_id VARCHAR, 
	stage VARCHAR NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (loan_id), 
	FOREIGN KEY(borrower_id) REFERENCES borrowers (borrower_id)
);

CREATE INDEX ix_loans_borrower_id ON loans (borrower_id);

CREATE INDEX ix_loans_due_date ON loans (due_date);
