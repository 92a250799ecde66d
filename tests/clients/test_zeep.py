"""A real SOAP client against the gateway: zeep, driven by a small hand-made SuiteTalk-shaped WSDL
(tests/data/netsuite_2024_2.wsdl), signing its tokenPassport as SPEC section 3 says.

zeep is synchronous (requests): each call runs in a thread against the in-process rig's URL.
No network: the WSDL and schemas are local files and the service address is the rig's.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import zeep
from lxml import etree
from zeep.exceptions import Fault
from zeep.transports import Transport

from gateway.config import load_settings
from gateway.core.decision import Forward
from gateway.core.envelope import EnvelopeInspector
from gateway.core.facts import RequestFacts
from gateway.core.lookups import Lookups
from gateway.core.policy import decide, policy_settings
from gateway.core.records import AccountView, InstallationView, InstalledVia, IntegrationView, State, TokenView
from gateway.core.tba import verify_token_passport
from tests.factories import tba_signature
from tests.web.conftest import MakeRig, Rig, Tenant

DATA = Path(__file__).resolve().parent.parent / "data"
WSDL_FILES = ("netsuite_2024_2.wsdl", "netsuite_messages_2024_2.xsd", "netsuite_core_2024_2.xsd")
BINDING = "{urn:platform_%s.webservices.netsuite.com}NetSuiteBinding"
CAPTURED = DATA / "zeep_tba_get_2024_2.xml"
# The inputs tests/data/zeep_tba_get_2024_2.xml was signed with (test values, not secrets).
FIXTURE_SECRETS: dict[str, Any] = {
    "account": "1234567_SB1", "consumer_key": "c0" * 32, "consumer_secret": "5e" * 32,
    "token_id": "70" * 32, "token_secret": "7e" * 32, "nonce": "zeepNonce0123456789", "timestamp": 1_700_000_000,
}

T = TypeVar("T")


class RecordingTransport(Transport):
    """Keeps the exact bytes zeep put on the wire."""

    def __init__(self) -> None:
        session = requests.Session()
        session.trust_env = False  # never a proxy from the environment: the rig is local
        super().__init__(session=session, timeout=10, operation_timeout=10)
        self.sent: list[bytes] = []

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> Any:
        self.sent.append(message)
        return super().post(address, message, headers)


def wsdl_for(version: str, into: Path | None = None) -> Path:
    """The fixture WSDL, rewritten for another endpoint version (all namespaces follow)."""
    if version == "2024_2":
        return DATA / WSDL_FILES[0]
    assert into is not None
    for name in WSDL_FILES:
        text = (DATA / name).read_text().replace("2024_2", version)
        (into / name.replace("2024_2", version)).write_text(text)
    return into / WSDL_FILES[0].replace("2024_2", version)


def zeep_service(version: str, address: str, tmp: Path | None = None) -> tuple[Any, RecordingTransport]:
    transport = RecordingTransport()
    client = zeep.Client(str(wsdl_for(version, tmp)), transport=transport)
    return client.create_service(BINDING % version, address), transport


def signed_passport(account: str, consumer_key: str, consumer_secret: str, token_id: str, token_secret: str, *,
                    nonce: str | None = None, timestamp: int | None = None,
                    algorithm: str = "HMAC-SHA256") -> dict[str, Any]:
    nonce = nonce or secrets.token_hex(12)
    ts = int(time.time()) if timestamp is None else timestamp
    sig = tba_signature(account, consumer_key, token_id, nonce, str(ts), consumer_secret, token_secret)
    return {"account": account, "consumerKey": consumer_key, "token": token_id, "nonce": nonce,
            "timestamp": ts, "signature": {"_value_1": sig, "algorithm": algorithm}}


def tenant_passport(t: Tenant, **kw: Any) -> dict[str, Any]:
    secrets_ = {"consumer_secret": t.integration["consumer_secret"], "token_secret": t.token["token_secret"]}
    secrets_.update({k: kw.pop(k) for k in list(kw) if k in secrets_})
    return signed_passport(t.account, t.integration["consumer_key"], secrets_["consumer_secret"],
                           t.token["token_id"], secrets_["token_secret"], **kw)


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


def fault_code(fault: Fault) -> str:
    assert fault.detail is not None
    codes = fault.detail.xpath(".//*[local-name()='code']/text()")
    return str(codes[0])


def service_of(rig: Rig, version: str = "2024_2", tmp: Path | None = None) -> tuple[Any, RecordingTransport]:
    return zeep_service(version, str(rig.client.make_url(f"/services/NetSuitePort_{version}")), tmp)


BASE_REF = {"internalId": "42", "type": "customer"}


async def test_zeep_tba_get_is_forwarded_byte_for_byte(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    service, transport = service_of(rig)
    result = await in_thread(lambda: service.get(baseRef=BASE_REF, _soapheaders={"tokenPassport": tenant_passport(t)}))
    assert result.isSuccess is True  # zeep parsed the backend's answer through the gateway
    [got] = rig.backend.received
    assert got.body_sha256 == hashlib.sha256(transport.sent[0]).hexdigest()
    assert got.headers["X-Gateway-Auth-Method"] == "token_based"
    assert got.headers["X-Gateway-Integration"] == t.integration["id"]
    assert got.headers["SOAPAction"] == '"get"'


async def test_zeep_hmac_underscore_spelling_is_forwarded(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    service, _ = service_of(rig)
    headers = {"tokenPassport": tenant_passport(t, algorithm="HMAC_SHA256")}
    result = await in_thread(lambda: service.get(baseRef=BASE_REF, _soapheaders=headers))
    assert result.isSuccess is True


async def test_zeep_wrong_signature_is_an_invalid_login_fault(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    service, transport = service_of(rig)
    headers = {"tokenPassport": tenant_passport(t, token_secret="0" * 64)}
    with pytest.raises(Fault) as caught:
        await in_thread(lambda: service.get(baseRef=BASE_REF, _soapheaders=headers))
    assert caught.value.message == "Invalid login attempt."
    assert caught.value.code == "soapenv:Server.userException"
    assert fault_code(caught.value) == "INVALID_LOGIN_ATTEMPT"
    assert rig.backend.received == []


async def test_zeep_replay_is_refused(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    service, _ = service_of(rig)
    headers = {"tokenPassport": tenant_passport(t)}
    await in_thread(lambda: service.get(baseRef=BASE_REF, _soapheaders=headers))
    with pytest.raises(Fault) as caught:
        await in_thread(lambda: service.get(baseRef=BASE_REF, _soapheaders=headers))
    assert fault_code(caught.value) == "INVALID_LOGIN_ATTEMPT"
    assert len(rig.backend.received) == 1


async def test_zeep_blocked_record(make_rig: MakeRig) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    await rig.store.registry.update_integration(t.account, t.integration["id"], {"state": "blocked"}, "test")
    service, _ = service_of(rig)
    with pytest.raises(Fault) as caught:
        await in_thread(lambda: service.get(baseRef=BASE_REF, _soapheaders={"tokenPassport": tenant_passport(t)}))
    assert fault_code(caught.value) == "WS_REQUEST_BLOCKED"


async def test_zeep_get_data_center_urls_needs_no_credentials(make_rig: MakeRig) -> None:
    rig = await make_rig()
    service, _ = service_of(rig)
    result = await in_thread(lambda: service.getDataCenterUrls(account="1234567"))
    assert result.isSuccess is True
    assert rig.backend.received[0].headers["X-Gateway-Auth-Method"] == "none"


async def test_zeep_passport_with_application_info(make_rig: MakeRig, tmp_path: Path) -> None:
    rig = await make_rig()
    t = await rig.tenant()
    passport = {"email": t.email, "password": "s3cret", "account": t.account, "role": {"internalId": "3"}}
    app_info = {"applicationId": t.integration["application_id"]}
    old, _ = service_of(rig, "2019_2", tmp_path)
    result = await in_thread(lambda: old.get(
        baseRef=BASE_REF, _soapheaders={"passport": passport, "applicationInfo": app_info}))
    assert result.isSuccess is True
    got = rig.backend.received[-1].headers
    assert got["X-Gateway-Auth-Method"] == "user_credentials" and got["X-Gateway-User"] == t.email
    # The same client on 2024_2: request-level credentials are gone there.
    new, _ = service_of(rig)
    with pytest.raises(Fault) as caught:
        await in_thread(lambda: new.get(baseRef=BASE_REF, _soapheaders={"passport": passport,
                                                                         "applicationInfo": app_info}))
    assert fault_code(caught.value) == "USER_ERROR" and "2020.2" in caught.value.message
    # tokenPassport together with an application ID is ambiguous (R4).
    with pytest.raises(Fault) as caught:
        await in_thread(lambda: new.get(baseRef=BASE_REF, _soapheaders={
            "tokenPassport": tenant_passport(t), "applicationInfo": app_info}))
    assert fault_code(caught.value) == "USER_ERROR"


# --------------------------------------------------------------------------- captured envelope


def test_captured_zeep_envelope_conforms() -> None:
    """What zeep sent (recorded by the sample backend; tests/data/zeep_tba_get_2024_2.xml): the
    core reads its tokenPassport, verifies the signature and forwards it."""
    f = FIXTURE_SECRETS
    data = CAPTURED.read_bytes()
    inspector = EnvelopeInspector(max_depth=64, max_head_bytes=262144, soap_action="get")
    inspector.feed(data)
    inspector.close()
    assert inspector.complete and inspector.error is None
    head = inspector.head
    assert head is not None and head.operation == "get"
    tp = head.token_passport
    assert tp is not None
    assert (tp.account, tp.consumer_key, tp.token, tp.nonce, tp.timestamp, tp.algorithm) == (
        f["account"], f["consumer_key"], f["token_id"], f["nonce"], str(f["timestamp"]), "HMAC-SHA256")
    now = f["timestamp"] + 10
    assert verify_token_passport(tp, consumer_secret=f["consumer_secret"], token_secret=f["token_secret"],
                                 now=now, skew=300, allowed=frozenset({"HMAC-SHA256"})) is None
    assert verify_token_passport(tp, consumer_secret=f["consumer_secret"], token_secret="x",
                                 now=now, skew=300, allowed=frozenset({"HMAC-SHA256"})) == "signature_invalid"
    integration = IntegrationView("rec", f["account"], "zeep", "A" * 32, f["consumer_key"], f["consumer_secret"])
    lookups = Lookups(
        account=AccountView(f["account"]), integration=integration,
        installation=InstallationView(f["account"], "rec", State.ENABLED, InstalledVia.OWNER),
        token=TokenView(f["token_id"], f["token_secret"], f["account"], "rec", "jane@example.com", "3"),
        nonce_fresh=True)
    facts = RequestFacts(path_version=(2024, 2), head=head)
    decision = decide(facts, lookups, now, policy_settings(load_settings(environ={})))
    assert isinstance(decision, Forward) and decision.who.integration == "rec"


def test_captured_envelope_is_what_zeep_sends_today(tmp_path: Path) -> None:
    """Guards the fixture against zeep's dialect drifting (same inputs, same bytes)."""
    f = FIXTURE_SECRETS
    shutil.copy(CAPTURED, tmp_path / "captured.xml")
    client = zeep.Client(str(wsdl_for("2024_2")), transport=RecordingTransport())
    service = client.create_service(BINDING % "2024_2", "http://127.0.0.1:9/services/NetSuitePort_2024_2")
    tp = signed_passport(f["account"], f["consumer_key"], f["consumer_secret"], f["token_id"], f["token_secret"],
                         nonce=f["nonce"], timestamp=f["timestamp"])
    envelope = client.create_message(service, "get", baseRef=BASE_REF, _soapheaders={"tokenPassport": tp})
    made = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    assert made == CAPTURED.read_bytes()
