"""moto's server (`python3 -m moto.server`), with one fix to its SigV4 check for the S3 tests.

moto checks a signature against the request's URL as werkzeug rebuilds it, which decodes an
escaped "/" in the query (`prefix=a%2Fb` becomes `prefix=a/b`). AWS signs the query as sent,
with "/" escaped (SigV4's canonical query string), as boto3 and reeld do; so every ListObjects
with a prefix holding a "/" failed with SignatureDoesNotMatch. Here the URL keeps the query
string exactly as the client sent it.
"""

import sys

from werkzeug.wrappers import Request


def _url_as_sent(self) -> str:
    query = self.environ.get("QUERY_STRING", "")
    return self.base_url + ("?" + query if query else "")


Request.url = property(_url_as_sent)

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
