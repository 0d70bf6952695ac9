"""Stock-library checks of the ISO 20022 files settle exchanges with banks, for its tests.

Independent of settle's Rust code: it checks the payment files settle writes and makes the
bank notifications settle reads, with stock Python libraries only (run in a venv holding
the pins the Rust tests install: sepaxml, xmlschema, pyiso20022 and xsdata).

    python bank_check.py validate FILE [FILE ...]
    python bank_check.py camt054 --version {02,08} --spec SPEC.json --out OUT.xml [--xsd XSD]

`validate` checks each pain.001.001.09 file against the schema shipped in sepaxml (with
xmlschema), then its sums and identities: the header's and each payment block's NbOfTxs
and CtrlSum against their transactions, one currency per block, one block per execution
date and currency, and unique EndToEndIds and PmtInfIds. Amounts are decimal.Decimal,
never floats. It prints {"files", "transactions", "errors"}; the errors ("<file>:
<message>") are empty when everything holds.

`camt054` builds a camt.054 Bank To Customer Debit Credit Notification (version .02 or
.08) from a JSON spec with pyiso20022's dataclasses, serialises it with xsdata (the
document's namespace as the default one), checks the document against the constraints
pyiso20022 carries from the schema, parses the file back with xsdata and ElementTree, and
(given --xsd) validates it against that schema with xmlschema. It prints {"written",
"entries"}. The spec:

    {"msg_id": "BANK-MSG-1", "created": "2026-03-01T10:00:00Z",
     "account_iban": "DE89370400440532013000",
     "entries": [{"outcome": "booked" | "returned" | "pending", "e2e": "...",
                  "amount": "123.45", "currency": "USD", "bank_ref": "...",
                  "booking_date": "2026-03-01", "reason": "AC04" (returned only)}]}

Each command prints one line of JSON, last on stdout, and exits 0 when it ran (invalid
payment files are reported in the JSON); it exits non-zero only when it could not run.
"""

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from decimal import Decimal, InvalidOperation

MAX_ERRORS = 50
MAX_MESSAGE = 300


# --- validate: pain.001.001.09 ------------------------------------------------------------


def pain001_schema():
    """The pain.001.001.09 schema shipped in sepaxml, loaded by xmlschema."""
    import sepaxml
    import xmlschema

    path = os.path.join(os.path.dirname(sepaxml.__file__), "schemas", "pain.001.001.09.xsd")
    return xmlschema.XMLSchema(path)


def local(tag) -> str:
    """An element's name without its namespace."""
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def kids(el, name):
    """The children of `el` named `name` (any namespace)."""
    return [c for c in el if local(c.tag) == name]


def kid(el, *path):
    """The first element down `path` of child names from `el`, or None."""
    for name in path:
        if el is None:
            return None
        found = kids(el, name)
        el = found[0] if found else None
    return el


def text(el):
    return None if el is None or el.text is None else el.text.strip()


def decimal(value: str, what: str, errors: list):
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError):
        errors.append(f"{what} is not a decimal: {value!r}")
        return None
    if not d.is_finite():
        errors.append(f"{what} is not a finite decimal: {value!r}")
        return None
    return d


def check_totals(where: str, el, count: int, total, errors: list):
    """`el`'s NbOfTxs and CtrlSum against `count` and `total` (None: an amount is unreadable,
    already reported, so the sum is not checked)."""
    nb, ctrl = text(kid(el, "NbOfTxs")), text(kid(el, "CtrlSum"))
    if nb is None:
        errors.append(f"{where}/NbOfTxs is missing ({count} transactions)")
    elif not nb.isdigit() or int(nb) != count:
        errors.append(f"{where}/NbOfTxs is {nb}, but it has {count} transactions")
    if ctrl is None:
        errors.append(f"{where}/CtrlSum is missing (its InstdAmt sum to {total})")
    elif total is not None:
        stated = decimal(ctrl, f"{where}/CtrlSum", errors)
        if stated is not None and stated != total:
            errors.append(f"{where}/CtrlSum is {ctrl}, but its InstdAmt sum to {total}")


def check_pain001(root) -> tuple[int, list]:
    """The sums and identities of one parsed pain.001 document: (transactions, errors)."""
    errors: list = []
    initn = kid(root, "CstmrCdtTrfInitn")
    if initn is None:
        return 0, [f"no CstmrCdtTrfInitn under {local(root.tag)}"]
    blocks = kids(initn, "PmtInf")
    all_count, all_total = 0, Decimal(0)
    e2e_seen: dict = {}
    pmt_inf_seen: dict = {}
    block_keys: dict = {}
    for i, block in enumerate(blocks, 1):
        pid = text(kid(block, "PmtInfId"))
        where = f"PmtInf[{i}] ({pid})"
        if pid is not None:
            if pid in pmt_inf_seen:
                errors.append(f"PmtInfId {pid!r} repeats (PmtInf[{pmt_inf_seen[pid]}] and [{i}])")
            else:
                pmt_inf_seen[pid] = i
        count, total, currencies = 0, Decimal(0), []
        for j, tx in enumerate(kids(block, "CdtTrfTxInf"), 1):
            count += 1
            e2e = text(kid(tx, "PmtId", "EndToEndId"))
            if e2e is None:
                errors.append(f"{where}/CdtTrfTxInf[{j}] has no PmtId/EndToEndId")
            elif e2e in e2e_seen:
                errors.append(f"EndToEndId {e2e!r} repeats ({e2e_seen[e2e]} and {where}/CdtTrfTxInf[{j}])")
            else:
                e2e_seen[e2e] = f"{where}/CdtTrfTxInf[{j}]"
            amt = kid(tx, "Amt", "InstdAmt")
            if amt is None:
                errors.append(f"{where}/CdtTrfTxInf[{j}] ({e2e}) has no Amt/InstdAmt")
                total = None
                continue
            value = decimal(text(amt), f"{where}/CdtTrfTxInf[{j}] InstdAmt", errors)
            total = None if value is None or total is None else total + value
            currencies.append(str(amt.get("Ccy")))
        currency = "/".join(sorted(set(currencies)))
        if len(set(currencies)) > 1:
            errors.append(f"{where} mixes currencies {currency}")
        check_totals(where, block, count, total, errors)
        when = kid(block, "ReqdExctnDt")
        date = None if when is None else (text(kid(when, "Dt")) or text(kid(when, "DtTm")) or text(when))
        key = (date, currency)
        if key in block_keys:
            errors.append(f"{where} repeats execution date {date} and currency {currency} of PmtInf[{block_keys[key]}]")
        else:
            block_keys[key] = i
        all_count += count
        all_total = None if total is None or all_total is None else all_total + total
    header = kid(initn, "GrpHdr")
    if header is None:
        errors.append("no GrpHdr")
    else:
        check_totals("GrpHdr", header, all_count, all_total, errors)
    return all_count, errors


def validate(files: list) -> dict:
    schema = pain001_schema()
    errors: list = []
    transactions = 0

    def report(path, message):
        if len(errors) < MAX_ERRORS:
            errors.append(f"{path}: {message}"[:MAX_MESSAGE])

    for path in files:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as e:
            report(path, f"cannot read or parse: {e}")
            continue
        for e in schema.iter_errors(path):
            if len(errors) >= MAX_ERRORS:
                break
            report(path, f"schema: {e.reason} (at {e.path})")
        count, found = check_pain001(root)
        transactions += count
        for message in found:
            report(path, message)
    return {"files": len(files), "transactions": transactions, "errors": errors}


# --- camt054: a bank's camt.054 notification ----------------------------------------------

OUTCOMES = {
    # outcome: (CdtDbtInd, status, BkTxCd family, sub-family)
    "booked": ("DBIT", "BOOK", "ICDT", "ESCT"),
    "returned": ("CRDT", "BOOK", "RCDT", "RRTN"),
    "pending": ("DBIT", "PDNG", "ICDT", "ESCT"),
}


def load_spec(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        spec = json.load(f, parse_float=Decimal)
    for key in ("msg_id", "created", "account_iban", "entries"):
        if key not in spec:
            raise ValueError(f"the spec has no {key!r}")
    for i, e in enumerate(spec["entries"]):
        if e.get("outcome") not in OUTCOMES:
            raise ValueError(f"entries[{i}]: outcome must be one of {sorted(OUTCOMES)}, not {e.get('outcome')!r}")
        for key in ("e2e", "amount", "currency", "bank_ref", "booking_date"):
            if key not in e:
                raise ValueError(f"entries[{i}] has no {key!r}")
        if e["outcome"] == "returned" and not e.get("reason"):
            raise ValueError(f"entries[{i}] is returned but has no 'reason'")
    return spec


def build_camt054(version: str, spec: dict):
    """The camt.054.001.<version> Document of `spec`, as pyiso20022 dataclasses."""
    from xsdata.models.datatype import XmlDate, XmlDateTime

    m = importlib.import_module(f"pyiso20022.camt.camt_054_001_{version}")
    v08 = version == "08"
    created = XmlDateTime.from_string(spec["created"])

    def amount(e):
        return m.ActiveOrHistoricCurrencyAndAmount(value=Decimal(str(e["amount"])), ccy=e["currency"])

    def entry(e):
        cdt_dbt, status, family, sub_family = OUTCOMES[e["outcome"]]
        refs = (m.TransactionReferences6 if v08 else m.TransactionReferences2)(
            acct_svcr_ref=e["bank_ref"], end_to_end_id=e["e2e"]
        )
        return_info = None
        if e["outcome"] == "returned":
            return_info = (m.PaymentReturnReason5 if v08 else m.ReturnReasonInformation10)(
                rsn=m.ReturnReason5Choice(cd=e["reason"]),
                addtl_inf=[f"Returned by the beneficiary bank, reason {e['reason']}"],
            )
        if v08:
            tx = m.EntryTransaction10(
                refs=refs, amt=amount(e), cdt_dbt_ind=m.CreditDebitCode(cdt_dbt), rtr_inf=return_info
            )
        else:
            tx = m.EntryTransaction2(
                refs=refs,
                amt_dtls=m.AmountAndCurrencyExchange3(tx_amt=m.AmountAndCurrencyExchangeDetails3(amt=amount(e))),
                rtr_inf=return_info,
            )
        booked = None
        if e["outcome"] != "pending":  # BookgDt is optional in both versions
            booked = (m.DateAndDateTime2Choice if v08 else m.DateAndDateTimeChoice)(
                dt=XmlDate.from_string(e["booking_date"])
            )
        return (m.ReportEntry10 if v08 else m.ReportEntry2)(
            amt=amount(e),
            cdt_dbt_ind=m.CreditDebitCode(cdt_dbt),
            sts=m.EntryStatus1Choice(cd=status) if v08 else m.EntryStatus2Code(status),
            bookg_dt=booked,
            acct_svcr_ref=e["bank_ref"],
            bk_tx_cd=m.BankTransactionCodeStructure4(
                domn=m.BankTransactionCodeStructure5(
                    cd="PMNT", fmly=m.BankTransactionCodeStructure6(cd=family, sub_fmly_cd=sub_family)
                )
            ),
            ntry_dtls=[(m.EntryDetails9 if v08 else m.EntryDetails1)(tx_dtls=[tx])],
        )

    account = m.AccountIdentification4Choice(iban=spec["account_iban"])
    notification = (m.AccountNotification17 if v08 else m.AccountNotification2)(
        id=f"{spec['msg_id']}-1",
        cre_dt_tm=created,
        acct=(m.CashAccount39 if v08 else m.CashAccount20)(id=account),
        ntry=[entry(e) for e in spec["entries"]],
    )
    message = (m.BankToCustomerDebitCreditNotificationV08 if v08 else m.BankToCustomerDebitCreditNotificationV02)(
        grp_hdr=(m.GroupHeader81 if v08 else m.GroupHeader42)(msg_id=spec["msg_id"], cre_dt_tm=created),
        ntfctn=[notification],
    )
    return m, m.Document(bk_to_cstmr_dbt_cdt_ntfctn=message)


def pyiso20022_validator():
    """pyiso20022's check of a document against the schema constraints its dataclasses carry
    (lengths, patterns, digits, occurrences, required fields). Loaded from its own file: the
    package `pyiso20022.tools` also imports pandas and lxml (for a camt.053 exporter), which
    this check does not use."""
    import pyiso20022

    path = os.path.join(os.path.dirname(pyiso20022.__file__), "tools", "validation.py")
    spec = importlib.util.spec_from_file_location("pyiso20022_tools_validation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.validate_message


def camt054(version: str, spec_path: str, out: str, xsd) -> dict:
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.config import ParserConfig
    from xsdata.formats.dataclass.serializers import XmlSerializer
    from xsdata.formats.dataclass.serializers.config import SerializerConfig

    spec = load_spec(spec_path)
    m, doc = build_camt054(version, spec)
    checked = pyiso20022_validator()(doc, strict=False)
    if not checked.is_valid:
        raise ValueError(f"the document breaks the schema's constraints: {checked}")

    namespace = m.Document.Meta.namespace
    serializer = XmlSerializer(config=SerializerConfig(indent="  ", xml_declaration=True, encoding="UTF-8"))
    xml = serializer.render(doc, ns_map={None: namespace})
    with open(out, "w", encoding="utf-8") as f:
        f.write(xml)

    # Read the file back: the same document, in the default namespace, with every EndToEndId.
    with open(out, encoding="utf-8") as f:
        written = f.read()
    strict = ParserConfig(fail_on_unknown_properties=True, fail_on_unknown_attributes=True)
    if XmlParser(config=strict).from_string(written, m.Document) != doc:
        raise ValueError("xsdata parses the written file to a different document")
    if re.search(r"<\w+:", written) or f'xmlns="{namespace}"' not in written:
        raise ValueError(f"the file does not use {namespace} as its only, default namespace")
    root = ET.fromstring(written.encode("utf-8"))
    if root.tag != f"{{{namespace}}}Document":
        raise ValueError(f"the root is {root.tag}")
    e2e = [el.text for el in root.iter(f"{{{namespace}}}EndToEndId")]
    if e2e != [e["e2e"] for e in spec["entries"]]:
        raise ValueError(f"the EndToEndIds read back are {e2e}")
    if xsd:
        import xmlschema

        problems = [f"{e.reason} (at {e.path})" for e in xmlschema.XMLSchema(xsd).iter_errors(out)]
        if problems:
            raise ValueError(f"{out} breaks {xsd}: {problems[:5]}")
    return {"written": out, "entries": len(spec["entries"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    v = commands.add_parser("validate", help="check pain.001.001.09 files")
    v.add_argument("files", nargs="+", metavar="FILE")
    c = commands.add_parser("camt054", help="write a camt.054 notification from a JSON spec")
    c.add_argument("--version", choices=["02", "08"], required=True)
    c.add_argument("--spec", required=True, metavar="SPEC.json")
    c.add_argument("--out", required=True, metavar="OUT.xml")
    c.add_argument("--xsd", help="also validate the output against this camt.054 schema")
    args = parser.parse_args()

    if args.command == "validate":
        print(json.dumps(validate(args.files)))
        return 0
    try:
        print(json.dumps(camt054(args.version, args.spec, args.out, args.xsd)))
    except (OSError, ValueError, KeyError) as e:
        print(json.dumps({"error": str(e)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
