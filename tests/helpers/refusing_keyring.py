"""A keyring that stores like keyrings.alt's file backend but refuses to delete (a locked or
read-only keyring), to check that Mneme says so instead of going on as if the key were gone."""

from keyring.errors import KeyringError
from keyrings.alt.file import PlaintextKeyring


class Keyring(PlaintextKeyring):
    def delete_password(self, service, username):
        raise KeyringError("the keyring is locked")
