"""Patches applied to the pinned moto server before it starts (scripts/moto-server).

- moto 5.2 serves requests on several threads, and its DynamoDB does not make a write
  atomic: two UpdateItems of one item at once can lose one of the updates (an ADD is
  lost), which DynamoDB never does. DynamoDB requests are served one at a time.
- Its TransactWriteItems backs up, for rollback, a deep copy of every table a transaction
  touches, once per item of the transaction: a transaction of 25 items on a 10,000-item
  table copies 250,000 items and takes seconds. The patch keeps moto's own transaction
  code and semantics but backs up only the items the transaction touches.
"""

import copy
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler

_dynamodb = threading.RLock()
_in_transaction = threading.local()


def _table_deepcopy(self, memo):
    # Inside a patched transaction the table is its own backup: the touched items are
    # backed up and restored by transact_write_items below.
    if getattr(_in_transaction, "active", False):
        return self
    copied = self.__class__.__new__(self.__class__)
    memo[id(self)] = copied
    for name, value in self.__dict__.items():
        setattr(copied, name, copy.deepcopy(value, memo))
    return copied


def _key_of(backend, op):
    table = backend.get_table(op["TableName"])
    if "Item" not in op:
        return op["Key"]
    attrs = op["Item"]
    key = {table.hash_key_attr: attrs[table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = attrs[table.range_key_attr]
    return key


_original_transact_write_items = DynamoDBBackend.transact_write_items


def transact_write_items(self, transact_items):
    with _dynamodb:
        backups = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                key = _key_of(self, op)
                current = self.get_item(op["TableName"], key)
                backups.append((op["TableName"], key, current.to_json()["Attributes"] if current else None))
            except Exception:
                pass  # moto's own code reports what is wrong with this entry
        _in_transaction.active = True
        try:
            return _original_transact_write_items(self, transact_items)
        except Exception:
            for table_name, key, attrs in reversed(backups):
                if attrs is None:
                    try:
                        self.delete_item(table_name, key)
                    except Exception:
                        pass
                else:
                    self.put_item(table_name, attrs)
            raise
        finally:
            _in_transaction.active = False


_original_call_action = DynamoHandler.call_action


def call_action(self):
    with _dynamodb:
        return _original_call_action(self)


def apply():
    Table.__deepcopy__ = _table_deepcopy
    DynamoDBBackend.transact_write_items = transact_write_items
    DynamoHandler.call_action = call_action
