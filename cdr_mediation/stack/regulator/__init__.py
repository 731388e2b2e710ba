"""The regulator's side of delivery, simulated: receives export files and answers as a test commands.

DEVELOPMENT ONLY. One process with

* an HTTPS API behind a mutual-TLS front (`api.py`, `tls_front.py`), the protocol of
  `infra/delivery/https.py`, with a private CA, server and exporter client certificate
  (`pki.py`; unencrypted keys: nothing here may be used outside the local stack);
* a watcher of the SFTP drop box served by `stack/sftp.py` (`dropbox.py`);
* a plain-HTTP control API on 127.0.0.1 that tells it how to answer (ACK, a RAP 1.05 return,
  or nothing so that the exporter times out) and reports every receipt.

What it decides is pure (`script.py`); what it holds is the drop box and the ledger of receipts
(`ledger.py`); what it answers is written by `answers.py`; `server.py` ties them together and
`component.py` makes it a stack component.
"""

from cdr_mediation.stack.regulator.component import Regulator
from cdr_mediation.stack.regulator.pki import DevPki, ensure_dev_pki

__all__ = ["DevPki", "Regulator", "ensure_dev_pki"]
