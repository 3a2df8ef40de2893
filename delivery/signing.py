"""Delivery's signed URL tokens: ``tusserver.security.url_signing``, which the local
direct-upload part URLs sign with too. Kept under this name for the app and the tests that
import it here.
"""

from tusserver.security.url_signing import UrlSigner as UrlSigner
from tusserver.security.url_signing import b64decode as b64decode
from tusserver.security.url_signing import b64encode as b64encode
