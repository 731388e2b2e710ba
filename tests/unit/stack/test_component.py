import pytest

from cdr_mediation.stack.component import require_binary
from cdr_mediation.stack.process import StackError


def test_a_missing_server_binary_names_the_debian_package_to_install():
    with pytest.raises(StackError) as caught:
        require_binary("no-such-server-binary", package="no-such-package")
    message = str(caught.value)
    assert "'no-such-server-binary' is not installed" in message
    assert "apt-get install -y --no-install-recommends no-such-package" in message


def test_a_present_binary_resolves_to_an_absolute_path():
    assert require_binary("sh", package="dash").startswith("/")
