"""A fast local stand-in of the checkout API for benchmarks: prebuilt answers, its own process.

The first path segment names the workload (``/cancel/...``, ``/change10/...``): every request
gets the same prebuilt success answer of that workload, so the client, not the server, is what a
benchmark measures.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

__all__ = ["LINES", "answer_server", "change_answer"]

#: The `change` workloads: lines in the cart and in the answer.
LINES = {"change10": 10, "change200": 200, "change2000": 2000}


def _item(n: int, quantity: int = 2) -> dict[str, Any]:
    return {
        "product_id": f"SKU-{n}",
        "uniqid": f"u-{n}",
        "quantity": quantity,
        "price": 1249.9,
        "total": 2499.8,
        "discountable": True,
        "bonusable": True,
        "rewardable": True,
        "paid_with_offers": 0,
        "paid_with_offers_per_product": 0,
        "paid_with_referral_discounts": 0,
        "paid_with_referral_discounts_per_product": 0,
        "paid_with_discounts": 249.98,
        "paid_with_discounts_per_product": 124.99,
        "paid_with_bonuses": 100,
        "paid_with_bonuses_per_product": 50,
        "paid_with_certificates": 0,
        "paid_with_certificates_per_product": 0,
        "bonuses_reward": 107.49,
        "bonuses_reward_per_product": 53.74,
        "bonuses_reward_loyalty_program": {"total": 107.49, "per_product": 53.74},
        "bonuses_reward_promotions": {},
        "certificates": {},
        "bonuses_used": 100,
        "bonuses_used_per_product": 50,
        "max_discountable_amount": 2499.8,
        "max_payable_by_bonuses": 674.94,
        "total_after_discounts": 2249.82,
        "total_after_discounts_per_product": 1124.91,
    }


def change_answer(lines: int, quantity: int = 2) -> bytes:
    """The answer of a `change` of *lines* lines, as the API would send it.

    With ``quantity=3``: the answer of ``details`` before that change (one more of each line),
    which the SDK reads before it sends a change.
    """
    payload = {
        "order_id": "1",
        "identifier": "79990001122",
        "payment_type": "card",
        "products_total": 2 * lines,
        "order_total": round(2499.8 * lines, 2),
        "order_total_change": -2499.8,
        "saved_total": 349.98 * lines,
        "saved_by_discounts": 249.98 * lines,
        "saved_by_bonuses": 100 * lines,
        "saved_by_offers": 0,
        "saved_by_certificates": 0,
        "order_to_pay": round(2149.82 * lines, 2),
        "order_bonuses_to_charge": 100 * lines,
        "bonuses_balance": 1000,
        "bonuses_reward": round(107.49 * lines, 2),
        "bonuses_referrer_reward": 0,
        "referrer_identifier": None,
        "referral_program": None,
        "applied_promotions": [],
        "rewarded_stickers": {},
        "used_stickers": {},
        "stickers_balance": {},
        "promo_codes": [],
        "promo_codes_failed": [],
        "certificates": [],
        "certificates_failed": [],
        "items": [_item(n, quantity) for n in range(lines)],
    }
    return json.dumps({"status": "success", "payload": payload}).encode()


def _answers() -> dict[str, bytes]:
    cancel = {"status": "success", "payload": {"order_id": "1", "identifier": "79990001122"}}
    answers = {"cancel": json.dumps(cancel).encode()}
    answers.update({name: change_answer(lines) for name, lines in LINES.items()})
    answers.update({f"{name}:GET": change_answer(lines, 3) for name, lines in LINES.items()})
    return answers


def _serve(port: int, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    answers = _answers()

    async def handle(request: web.BaseRequest) -> web.Response:
        await request.read()
        workload = request.path.split("/", 2)[1]
        if request.method == "GET":
            workload += ":GET"
        body = answers.get(workload, answers["cancel"])
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        server = web.Server(handle, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def answer_server(cpu: int | None = None) -> Iterator[str]:
    """Run the stand-in in a process of its own (pinned to *cpu* if given); yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, cpu), daemon=True
    )
    process.start()
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if not process.is_alive():
                    raise
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.join()
