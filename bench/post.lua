-- wrk script: POST the SOAP envelope in file BODY_FILE (read once) with SOAPAction SOAP_ACTION.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
wrk.headers["SOAPAction"] = os.getenv("SOAP_ACTION") or "get"
