"""The portfolio view on the embedded dev server (visibility is not in the time-skipping
server): search attributes registered by the worker's first loan, kept current, and used by
`list` filters and `stats`; none of them carries personal data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

import starter
from infra import search_attributes as sa
from models import Payment
from tests.helpers import daytime_zone, eventually, make_loan
from worker import create_worker


async def test_list_filters_and_stats_come_from_search_attributes(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    client = dev_env.client
    queue = f"portfolio-{uuid.uuid4()}"
    tz = daytime_zone()  # catch-up steps (the agency placement at DPD 100) run only in contact hours
    loans = [
        make_loan(f"PF-{dpd}", dpd=dpd, principal=principal, tz=tz)
        for dpd, principal in ((2, "1000.00"), (35, "2000.00"), (100, "8000.00"))
    ]
    async with create_worker(client, task_queue=queue, database_url=f"sqlite:///{tmp_path / 'c.db'}"):
        for loan in loans:
            await starter.start_collection(client, loan, task_queue=queue)

        async def middle_and_agency() -> None:
            middle = await starter.list_loans(client, stage="middle")
            assert [r["loan_id"] for r in middle] == ["PF-35"]
            assert middle[0]["dpd_band"] == "30-59" and middle[0]["currency"] == "CNY"
            placed = await starter.list_loans(client, agency="default-agency")  # DPD 100: placed at once
            assert [r["loan_id"] for r in placed] == ["PF-100"] and placed[0]["stage"] == "late"

        await eventually(middle_and_agency)

        async def stats() -> None:
            rows = {r["stage"]: r for r in await starter.portfolio_stats(client, policy="default")}
            assert {s: r["loans"] for s, r in rows.items()} == {"early": 1, "middle": 1, "late": 1}
            assert Decimal(rows["early"]["outstanding"]) == Decimal("1600.00")  # 1,000 + 500 + 100

        await eventually(stats)

        await starter.register_payment(
            client,
            "PF-2",
            Payment(payment_id="PF-PAY", amount=Decimal("1600.00"), currency="CNY", paid_at=datetime.now(UTC)),
        )

        async def paid() -> None:
            rows = await starter.list_loans(client, stage="paid")
            assert [r["loan_id"] for r in rows] == ["PF-2"] and rows[0]["outstanding"] == "0.00"

        await eventually(paid)

        described = await client.get_workflow_handle("collection-PF-100").describe()
        values = {k.name: described.typed_search_attributes.get(k) for k in sa.ALL}
        assert values[sa.POLICY.name] == "default" and values[sa.OUTSTANDING.name] == 860000  # 8,600.00 in fen
        flat = " ".join(str(v) for v in values.values())
        borrower = loans[2].borrower
        assert borrower.name not in flat and borrower.phone not in flat and borrower.email not in flat
