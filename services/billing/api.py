"""Billing routes (served without the /api/v1 prefix, which the gateway strips): thin, they parse,
call the service and shape the response. ``/internal/*`` is for other services only (the gateway
never routes it, and every route there needs a service credential).

Every public route is about the caller's own money (no user id in any path): a transaction id of
someone else's wallet answers 404, like one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Annotated, TypeVar

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from common.errors import AppError
from common.identity import AdminIdentity, CurrentIdentity
from common.internal import require_service
from services.billing import repository as repo
from services.billing import service
from services.billing.models import TransactionKind
from services.billing.repository import ChargeResult
from services.billing.schemas import (
    ChargeBatchCreate,
    ChargeBatchRead,
    ChargeCreate,
    ChargeRead,
    EarningsRead,
    InternalWalletRead,
    RefundCreate,
    RefundRead,
    TopupCreate,
    TopupRead,
    VideoEarnings,
    WalletRead,
    WalletTransactionPage,
    WalletTransactionRead,
)

Body = TypeVar("Body", bound=BaseModel)
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
REPLAYED_HEADER = "Idempotent-Replayed"


# The dependency is ``async def``: FastAPI runs plain ``def`` dependencies in its thread pool, a
# thread hand-off each, which costs more than a charge's own work.
async def get_billing(request: Request) -> service.Billing:
    billing: service.Billing = request.app.state.billing
    return billing


BillingDep = Annotated[service.Billing, Depends(get_billing)]
STREAMING_CREDENTIALS = require_service("streaming")
AnyService = Annotated[str, Depends(require_service())]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a request safely: the same key and body answer the first response again.",
    ),
]

internal_router = APIRouter(prefix="/internal", tags=["internal"])
wallet_router = APIRouter(prefix="/wallet", tags=["wallet"])
creator_router = APIRouter(prefix="/creator", tags=["creator"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])


async def _streaming_body(request: Request, model: type[Body]) -> Body:
    """The charge routes' hot path: the streaming credential and the body, handled here rather than
    declared as parameters, whose resolution costs FastAPI more than the rest of the request."""
    await STREAMING_CREDENTIALS(request)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _json(content: dict[str, object], status_code: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content), status_code=status_code, media_type="application/json", headers=headers
    )


# --- internal ----------------------------------------------------------------------------------


@internal_router.post(
    "/charges",
    status_code=201,
    response_model=ChargeRead,
    responses={200: {"model": ChargeRead, "description": "A replay of a charge already made."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChargeCreate.model_json_schema()}},
        }
    },
)
async def create_charge(request: Request) -> Response:
    """Charge one unit of a session (key ``session:unit``): 201 new, 200 replay, 402 insufficient funds.

    Needs the streaming service's credential (X-Service-Token)."""
    body = await _streaming_body(request, ChargeCreate)
    billing: service.Billing = request.app.state.billing
    result = await service.charge_unit(billing, body)
    return _json(_charge_read(body, result), 200 if result.replayed else 201)


def _charge_read(data: ChargeCreate, result: ChargeResult) -> dict[str, object]:
    return {
        "transaction_id": str(result.transaction_id),
        "key": data.key,
        "amount": result.amount,
        "creator_share": result.amount - result.platform_fee,
        "platform_fee": result.platform_fee,
        "balance": result.balance,
        "currency": data.currency,
        "replayed": result.replayed,
    }


@internal_router.post(
    "/charges/batch",
    response_model=ChargeBatchRead,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChargeBatchCreate.model_json_schema()}},
        }
    },
)
async def create_charges(request: Request) -> Response:
    """Charge up to 50 units in one database transaction (group commit); each answer is what
    ``POST /internal/charges`` would have answered for that charge alone, in the order sent.

    Needs the streaming service's credential (X-Service-Token)."""
    body = await _streaming_body(request, ChargeBatchCreate)
    billing: service.Billing = request.app.state.billing
    answers = await service.charge_units(billing, body.charges)
    results: list[dict[str, object]] = []
    for data, answer in zip(body.charges, answers, strict=True):
        if isinstance(answer, AppError):
            results.append(
                {"key": data.key, "status": answer.status, "code": answer.code, "detail": answer.detail}
                | answer.extra
            )
        else:
            results.append(
                {"key": data.key, "status": 200 if answer.replayed else 201} | _charge_read(data, answer)
            )
    return _json({"results": results}, 200)


@internal_router.get("/wallets/{user_id}", response_model=InternalWalletRead)
async def internal_wallet(user_id: uuid.UUID, _: AnyService, billing: BillingDep) -> InternalWalletRead:
    """A user's wallet balance (0 when they never topped up)."""
    balance = await service.wallet_balance(billing, user_id)
    return InternalWalletRead(user_id=user_id, balance=balance, currency=billing.settings.currency)


# --- wallet ------------------------------------------------------------------------------------


@wallet_router.get("", response_model=WalletRead)
async def get_wallet(identity: CurrentIdentity, billing: BillingDep) -> WalletRead:
    """Your wallet's balance."""
    balance = await service.wallet_balance(billing, service.user_uuid(identity))
    return WalletRead(balance=balance, currency=billing.settings.currency)


@wallet_router.post(
    "/topups",
    status_code=201,
    response_model=TopupRead,
    responses={402: {"description": "The payment method was declined (payment_declined)."}},
)
async def create_topup(
    body: TopupCreate,
    identity: CurrentIdentity,
    billing: BillingDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Add money to your wallet through the payment provider (send an Idempotency-Key)."""
    result = await service.top_up(billing, body, identity=identity, idempotency_key=idempotency_key)
    read = TopupRead(
        transaction_id=result.transaction_id,
        amount=result.amount,
        balance=result.balance,
        currency=billing.settings.currency,
        created_at=result.created_at,
    )
    # The same status as the first response: a replay is that response, sent again.
    headers = {REPLAYED_HEADER: "true"} if result.replayed else None
    return Response(read.model_dump_json(), status_code=201, media_type="application/json", headers=headers)


def _line(line: repo.StatementLine) -> WalletTransactionRead:
    return WalletTransactionRead(
        id=line.transaction_id,
        kind=TransactionKind(line.kind),
        amount=line.amount,
        balance_after=line.balance_after,
        currency=line.currency,
        created_at=line.created_at,
        video_id=line.video_id,
        session_id=line.session_id,
        unit=line.unit,
        refund_of=line.refund_of,
    )


@wallet_router.get("/transactions", response_model=WalletTransactionPage)
async def list_wallet_transactions(
    identity: CurrentIdentity,
    billing: BillingDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> WalletTransactionPage:
    """Your wallet's transactions, newest first; pass ``next_cursor`` back for the next page."""
    page = await service.wallet_statement(billing, identity=identity, cursor=cursor, limit=limit)
    return WalletTransactionPage(items=[_line(line) for line in page.items], next_cursor=page.next_cursor)


@wallet_router.get("/transactions/{transaction_id}", response_model=WalletTransactionRead)
async def get_wallet_transaction(
    transaction_id: uuid.UUID, identity: CurrentIdentity, billing: BillingDep
) -> WalletTransactionRead:
    """One transaction of your wallet."""
    line = await service.wallet_transaction(billing, transaction_id, identity=identity)
    return _line(line)


# --- creators ----------------------------------------------------------------------------------


@creator_router.get("/earnings", response_model=EarningsRead)
async def get_earnings(identity: CurrentIdentity, billing: BillingDep) -> EarningsRead:
    """Your earnings as a creator: the total and per video (shares of charges, less refunds)."""
    total, videos = await service.earnings(billing, identity=identity)
    return EarningsRead(
        total=total,
        currency=billing.settings.currency,
        videos=[VideoEarnings(video_id=v.video_id, amount=v.amount, charges=v.charges) for v in videos],
    )


# --- admin -------------------------------------------------------------------------------------


@admin_router.post("/refunds", status_code=201, response_model=RefundRead)
async def create_refund(
    body: RefundCreate,
    admin: AdminIdentity,
    billing: BillingDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Refund all (no amount) or part of a charge to the viewer's wallet (admins; Idempotency-Key)."""
    result = await service.refund_charge(billing, body, admin=admin, idempotency_key=idempotency_key)
    read = RefundRead(
        transaction_id=result.transaction_id,
        refund_of=result.refund_of,
        amount=result.amount,
        creator_part=result.amount - result.platform_fee,
        platform_part=result.platform_fee,
        balance=result.balance,
        currency=billing.settings.currency,
        created_at=result.created_at,
    )
    headers = {REPLAYED_HEADER: "true"} if result.replayed else None
    return Response(read.model_dump_json(), status_code=201, media_type="application/json", headers=headers)


routers = [internal_router, wallet_router, creator_router, admin_router]
