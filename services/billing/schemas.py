"""What billing accepts and answers. Money is integer cents with its currency."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.billing.models import (
    CHARGE_BATCH_MAX,
    CHARGE_MAX,
    PAYMENT_METHOD_MAX,
    REASON_MAX,
    TransactionKind,
)

Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- internal (streaming) ----------------------------------------------------------------------


class ChargeCreate(_Strict):
    """One billing unit of one playback session. ``key`` is ``"<session_id>:<unit>"``."""

    key: str = Field(min_length=3, max_length=100)
    session_id: uuid.UUID
    unit: int = Field(ge=0, le=10_000_000, strict=True)
    viewer_id: uuid.UUID
    creator_id: uuid.UUID
    video_id: uuid.UUID
    amount: int = Field(gt=0, le=CHARGE_MAX, strict=True, description="Cents; one unit at the video's price.")
    currency: Currency


class ChargeBatchCreate(_Strict):
    """Several charges at once, each with exactly the meaning it has alone (group commit)."""

    charges: list[ChargeCreate] = Field(min_length=1, max_length=CHARGE_BATCH_MAX)


class ChargeBatchItem(BaseModel):
    """One charge's answer: ``status`` is what ``POST /internal/charges`` would have answered (201
    new, 200 replay, 402 insufficient funds with ``balance``, 422 with ``code``); the charge fields
    are set when it was charged."""

    key: str
    status: int
    code: str | None = None
    detail: str | None = None
    transaction_id: uuid.UUID | None = None
    amount: int | None = None
    creator_share: int | None = None
    platform_fee: int | None = None
    balance: int | None = None
    currency: str | None = None
    replayed: bool | None = None


class ChargeBatchRead(BaseModel):
    results: list[ChargeBatchItem] = Field(description="One answer per charge, in the order sent.")


class ChargeRead(BaseModel):
    transaction_id: uuid.UUID
    key: str
    amount: int
    creator_share: int
    platform_fee: int
    balance: int = Field(description="The viewer's balance after this charge (on a replay: now).")
    currency: str
    replayed: bool


class InternalWalletRead(BaseModel):
    user_id: uuid.UUID
    balance: int
    currency: str


# --- wallet ------------------------------------------------------------------------------------


class WalletRead(BaseModel):
    balance: int
    currency: str


class TopupCreate(_Strict):
    amount: int = Field(gt=0, strict=True, description="Cents, within the configured top-up bounds.")
    payment_method: str = Field(
        min_length=1,
        max_length=PAYMENT_METHOD_MAX,
        description="The provider's payment method; the sandbox takes 'test_card' and 'test_card_declined'.",
    )


class TopupRead(BaseModel):
    transaction_id: uuid.UUID
    status: str = "succeeded"
    amount: int
    balance: int = Field(description="The wallet's balance right after this top-up.")
    currency: str
    created_at: datetime


class WalletTransactionRead(BaseModel):
    """One line of the wallet's statement: amounts signed from the wallet's point of view."""

    id: uuid.UUID
    kind: TransactionKind
    amount: int = Field(description="Signed: + money in (top-up, refund), - money out (charge).")
    balance_after: int
    currency: str
    created_at: datetime
    video_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    unit: int | None = None
    refund_of: uuid.UUID | None = None


class WalletTransactionPage(BaseModel):
    items: list[WalletTransactionRead]
    next_cursor: str | None


# --- creators ----------------------------------------------------------------------------------


class VideoEarnings(BaseModel):
    video_id: uuid.UUID
    amount: int = Field(description="Net earnings from this video: shares of charges less refunds.")
    charges: int = Field(description="Units charged.")


class EarningsRead(BaseModel):
    total: int
    currency: str
    videos: list[VideoEarnings]


# --- admin -------------------------------------------------------------------------------------


class RefundCreate(_Strict):
    transaction_id: uuid.UUID = Field(description="The charge to refund.")
    amount: int | None = Field(
        default=None,
        gt=0,
        le=CHARGE_MAX,
        strict=True,
        description="Cents; omitted: everything not yet refunded.",
    )
    reason: str | None = Field(default=None, max_length=REASON_MAX)


class RefundRead(BaseModel):
    transaction_id: uuid.UUID
    refund_of: uuid.UUID
    amount: int
    creator_part: int
    platform_part: int
    balance: int = Field(description="The viewer's balance right after this refund.")
    currency: str
    created_at: datetime
