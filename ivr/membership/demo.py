"""Synthetic demo participants for the reference membership service. Every name and number
here is invented: card numbers start ``0001`` (and ``0009999999`` for fault injection);
NIKs follow the real layout (region, DDMMYY with 40 added to the day for women, serial) so
that the IVR's checks accept them, with birth dates matching the records.

Billing follows ``../shared/notes/domain.md``. ``monthly_premium`` is per person per month
and ``amount_due = months_in_arrears × monthly_premium × family_members``:
- PBPU/BP (``PESERTA`` pays): the participant's share for the class, 150000 / 100000 / 35000;
- PBI (``PEMERINTAH`` pays): the full class 3 contribution, 42000, never in arrears;
- PPU (``PEMBERI_KERJA`` pays): 5% of the (capped) wage for the family, per member.

Bodies are exactly the contract's JSON, so they can be served as they are.
"""
from __future__ import annotations

from typing import Any

DUE = "2026-12-10"


def _facility(code: str, name: str) -> dict[str, str]:
    return {"code": code, "name": name}


def _billing(payer: str, monthly_premium: int, family_members: int, months_in_arrears: int,
             amount_due: int) -> dict[str, Any]:
    return {"payer": payer, "monthly_premium": monthly_premium,
            "family_members": family_members, "months_in_arrears": months_in_arrears,
            "amount_due": amount_due, "due_date": DUE}


# Last 4 digits of each participant's registered mobile number (contract v1.1), what a
# caller who identifies with a NIK must key in; a participant left out has none registered
# (the NIK cannot be verified: the caller is asked for the card number).
PHONE_LAST4: dict[str, str] = {
    "0001234567890": "4821", "0001100000011": "7302", "0001100000022": "1597",
    "0001100000044": "6640", "0001100000055": "2208", "0001100000066": "9013",
    "0001100000077": "3356", "0001100000088": "8124", "0001100000099": "5570",
    "0001100000100": "0419", "0001100000111": "2765", "0001100000122": "6088",
    "0001100000144": "1930", "0009999999902": "0902", "0009999999903": "0903",
}


def _body(card: str, nik: str, name: str, birth_date: str, status: str, reason: str | None,
          segment: str, member_class: int, facility: dict | None, billing: dict | None
          ) -> dict[str, Any]:
    return {"card_number": card, "nik": nik, "name": name, "birth_date": birth_date,
            "status": status, "inactive_reason": reason, "segment": segment,
            "class": member_class, "primary_facility": facility,
            "phone_last4": PHONE_LAST4.get(card), "billing": billing}


MENTENG = _facility("0101U002", "PUSKESMAS MENTENG")
BABAKAN = _facility("1003U011", "PUSKESMAS BABAKAN SARI")
KLINIK = _facility("1302K005", "KLINIK PRATAMA SEHAT SENTOSA")
DOKTER = _facility("1101D019", "DR. CONTOH PRAKTIK MANDIRI")

PARTICIPANTS: list[dict[str, Any]] = [
    # The contract's example, exactly.
    _body("0001234567890", "3174015708900003", "SITI RAHAYU", "1990-08-17", "AKTIF", None,
          "PBPU", 2, MENTENG, _billing("PESERTA", 100000, 3, 2, 600000)),
    _body("0001100000011", "3273011203750011", "BUDI SANTOSO", "1975-03-12", "AKTIF", None,
          "PBI", 3, BABAKAN, _billing("PEMERINTAH", 42000, 4, 0, 0)),
    _body("0001100000022", "3578010511820022", "AGUS SETIAWAN", "1982-11-05", "AKTIF", None,
          "PPU", 1, KLINIK, _billing("PEMBERI_KERJA", 150000, 4, 0, 0)),
    # A self-payer who has paid everything.
    _body("0001100000033", "3374027001580033", "NUR HASANAH", "1958-01-30", "AKTIF", None,
          "BP", 1, DOKTER, _billing("PESERTA", 150000, 2, 0, 0)),
    _body("0001100000044", "3471022106880044", "EKO PRASETYO", "1988-06-21", "AKTIF", None,
          "PBPU", 3, BABAKAN, _billing("PESERTA", 35000, 5, 1, 175000)),
    _body("0001100000055", "3201035402930055", "RINA MARLINA", "1993-02-14", "TIDAK_AKTIF",
          "TUNGGAKAN", "PBPU", 3, MENTENG, _billing("PESERTA", 35000, 4, 7, 980000)),
    # The most that reactivation can ask: 24 months.
    _body("0001100000066", "5171010110700066", "WAYAN SUDARSANA", "1970-10-01", "TIDAK_AKTIF",
          "TUNGGAKAN", "PBPU", 1, KLINIK, _billing("PESERTA", 150000, 4, 24, 14400000)),
    _body("0001100000077", "1271026512650077", "DEWI ANGGRAINI", "1965-12-25", "TIDAK_AKTIF",
          "TUNGGAKAN", "BP", 2, None, _billing("PESERTA", 100000, 1, 3, 300000)),
    # The employer stopped paying: its arrears, which the IVR does not read out.
    _body("0001100000088", "3671010904850088", "HENDRA WIJAYA", "1985-04-09", "TIDAK_AKTIF",
          "PENANGGUHAN", "PPU", 2, DOKTER, _billing("PEMBERI_KERJA", 100000, 2, 3, 600000)),
    _body("0001100000099", "1671010307010099", "MUHAMMAD RIZKY", "2001-07-03", "TIDAK_AKTIF",
          "NONAKTIF_PBI", "PBI", 3, BABAKAN, None),
    _body("0001100000100", "5371011509600100", "YOHANES LAKA", "1960-09-15", "TIDAK_AKTIF",
          "DATA_TIDAK_VALID", "BP", 3, MENTENG, _billing("PESERTA", 35000, 2, 1, 70000)),
    _body("0001100000111", "3374014205480111", "SRI WAHYUNI", "1948-05-02", "TIDAK_AKTIF",
          "MENINGGAL", "PBPU", 2, KLINIK, None),
    _body("0001100000122", "7371016911950122", "ANDI PRATIWI", "1995-11-29", "TIDAK_AKTIF",
          "LAINNYA", "PPU", 1, DOKTER, _billing("PEMBERI_KERJA", 150000, 2, 0, 0)),
    # Born in the 2000s and on 29 February: edge cases of the NIK's date part.
    _body("0001100000133", "6371014101100133", "FITRI HANDAYANI", "2010-01-01", "AKTIF", None,
          "PBI", 3, BABAKAN, _billing("PEMERINTAH", 42000, 5, 0, 0)),
    _body("0001100000144", "3671022902960144", "JOKO SUSILO", "1996-02-29", "AKTIF", None,
          "BP", 2, MENTENG, _billing("PESERTA", 100000, 2, 1, 200000)),
]

# Sex of each demo participant (L laki-laki, P perempuan): what the NIK's day part encodes.
SEX: dict[str, str] = {
    "0001234567890": "P", "0001100000011": "L", "0001100000022": "L", "0001100000033": "P",
    "0001100000044": "L", "0001100000055": "P", "0001100000066": "L", "0001100000077": "P",
    "0001100000088": "L", "0001100000099": "L", "0001100000100": "L", "0001100000111": "P",
    "0001100000122": "P", "0001100000133": "P", "0001100000144": "L",
}

# Fault injection: card numbers the reference service treats specially (by card number
# only; the NIKs of the two delayed participants answer at once).
FAULT_SERVER_ERROR = "0009999999901"   # 500 {"error": "internal"}
FAULT_SLOW = "0009999999902"           # a normal active participant after SLOW_SECONDS
FAULT_TIMEOUT = "0009999999903"        # a normal active participant after TIMEOUT_SECONDS
FAULT_MALFORMED = "0009999999904"      # 200 application/json breaking the contract
# Longer than the IVR's hold-prompt delay (1 s), well within its lookup limit (3 s).
SLOW_SECONDS = 1.5
# Far beyond the lookup limit: the IVR gives up and transfers to an agent.
TIMEOUT_SECONDS = 10.0
DELAYS = {FAULT_SLOW: SLOW_SECONDS, FAULT_TIMEOUT: TIMEOUT_SECONDS}
MALFORMED_BODY = ('{"card_number": "0009999999904", "status": "AKTIF", "segment": "PBPU", '
                  '"class": "dua", "billing": {"amount_due": "600.000"}}')

# The records behind the delayed answers (stored like any other participant).
FAULT_PARTICIPANTS: list[dict[str, Any]] = [
    _body(FAULT_SLOW, "3174010101800902", "PESERTA UJI LAMBAT", "1980-01-01", "AKTIF", None,
          "PBPU", 3, MENTENG, _billing("PESERTA", 35000, 1, 1, 35000)),
    _body(FAULT_TIMEOUT, "3174010101800903", "PESERTA UJI TIMEOUT", "1980-01-01", "AKTIF",
          None, "PBPU", 3, MENTENG, _billing("PESERTA", 35000, 1, 1, 35000)),
]

FAULTS = {
    FAULT_SERVER_ERROR: "HTTP 500",
    FAULT_SLOW: f"answers after {SLOW_SECONDS:g} s (the IVR says \"mohon tunggu\"), then an "
                "active participant; birth date 01011980",
    FAULT_TIMEOUT: f"answers after {TIMEOUT_SECONDS:g} s: the lookup times out, the call goes "
                   "to an agent",
    FAULT_MALFORMED: "200 with a body that breaks the contract: service unavailable",
}


def keys(birth_date: str) -> str:
    """``1990-08-17`` → ``17081990``, what the caller presses."""
    year, month, day = birth_date.split("-")
    return f"{day}{month}{year}"


def _rupiah(amount: int) -> str:
    return "Rp" + f"{amount:,}".replace(",", ".")


def demo_table_markdown() -> str:
    """The demo participants and the fault-injection cards, as Markdown for the README."""
    lines = ["| Card | NIK | Birth date (keys) | Phone, last 4 (after a NIK) | Status | Segment "
             "| Class | Payer | Amount due |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in PARTICIPANTS:
        status = p["status"] + (f" ({p['inactive_reason']})" if p["inactive_reason"] else "")
        bill = p["billing"]
        payer, due = (bill["payer"], _rupiah(bill["amount_due"])) if bill else ("—", "—")
        phone = p["phone_last4"] or "none: card number only"
        lines.append(f"| {p['card_number']} | {p['nik']} | {keys(p['birth_date'])} | {phone} "
                     f"| {status} | {p['segment']} | {p['class']} | {payer} | {due} |")
    lines += ["", "| Card | Fault injected by the reference service |", "|---|---|"]
    lines += [f"| {card} | {what} |" for card, what in FAULTS.items()]
    return "\n".join(lines) + "\n"
