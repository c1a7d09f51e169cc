import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_connecting_outside_loopback_is_refused():
    with pytest.raises(SocketConnectBlockedError), pytest.warns(UserWarning, match="93.184.216.34"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
