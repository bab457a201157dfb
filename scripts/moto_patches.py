"""Patches applied to the pinned moto server before it starts (scripts/moto-server).

- moto 5.2 serves requests on several threads, and its DynamoDB does not make a write
  atomic: two UpdateItems of one item at once can lose one of the updates (an ADD is
  lost), which DynamoDB never does. DynamoDB requests are served one at a time.
- Its TransactWriteItems backs up, for rollback, a deep copy of every table a transaction
  touches, once per item of the transaction: a transaction of 25 items on a 10,000-item
  table copies 250,000 items and takes seconds. The patch keeps moto's own transaction
  code and semantics but backs up only the items the transaction touches.
- A cancelled TransactWriteItems leaves stream records behind in moto: it applies the
  items one by one (each write recorded on the table's stream) and rolls back with more
  writes. DynamoDB records a transaction on the stream only when it commits, and the
  outbox relay publishes what the stream carries, so the patch drops the records of a
  transaction that did not commit; stream reads wait for a transaction to end.
- An UpdateItem that creates its item leaves two stream records in moto: an INSERT of the
  key alone (moto puts the key, then applies the update to it) and an INSERT of the whole
  item. DynamoDB records one write, the whole item: the key-only image (a delivery with
  no history, status or channel) is an item no Herald write leaves, and the outbox relay
  held the deliveries stream on it. The patch drops that record (and renumbers the one
  after it), so the stream carries one INSERT with the item as the update left it.
- AWS's limits that moto does not enforce (or enforces at another value) for the requests
  Herald makes, refused with AWS's own error: see "AWS's limits" below. What moto already
  enforces as AWS does is left to moto: PutEvents' 10 entries, a malformed Detail (the
  entry's MalformedDetail), BatchGetItem's 100 keys and 16 MB (UnprocessedKeys),
  TransactWriteItems' 100 actions.
- SES's mailbox simulator and event publishing: moto records sends but publishes no
  events. The patch keeps each configuration set's event destinations
  (CreateConfigurationSetEventDestination, which moto's SES v2 lacks) and, for a send
  through a set to a simulator address, puts on the destination's bus the events SES
  would publish, in SES's format: success@ delivered, bounce@ a permanent bounce,
  complaint@ delivered then a complaint, ooto@ delivered, suppressionlist@ a bounce for
  the account's suppression list (https://docs.aws.amazon.com/ses/latest/dg/send-an-email-from-console.html#send-email-simulator).
  Mail to any other address publishes nothing (SES would publish its delivery).
- EventBridge to Firehose to S3: moto's rules deliver to no Firehose target, and its
  Firehose writes a put's records to S3 as they came, under the prefix plus
  YYYY/MM/DD/HH/. The patch delivers a rule's events to a Firehose target (each event as
  EventBridge sends it, one record) and writes an S3 destination's objects as Firehose
  does: the prefix's !{timestamp:...} and !{firehose:random-string} expressions evaluated
  (https://docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html), the
  AppendDelimiterToRecord processor's newline after each record, and GZIP compression
  with its .gz suffix. It does not buffer: each put is its own object, where Firehose
  gathers records for BufferingHints' interval or size.
- SNS's SMS delivery status: moto records a Publish to a phone number and logs nothing.
  Once the account's SMS attribute DeliveryStatusIAMRole is set (SetSMSAttributes), the
  patch writes each such message's status record, in SNS's format
  (https://docs.aws.amazon.com/sns/latest/dg/sms_stats_cloudwatch.html), to the log group
  sns/<region>/<account>/DirectPublishToPhoneNumber, creating it as SNS does if missing:
  a success, kept as DeliveryStatusSuccessSamplingRate says (0 unless set), or, for a
  number ending 0199 (the local stack's unreachable phone) or 0198 (its blocked one), a
  failure ("Phone is currently unreachable/unavailable", "Phone carrier has blocked this
  message") in the group's /Failure. SNS writes a record once
  the carrier answers, seconds later; the patch writes it as Publish answers.
"""

import base64
import copy
import datetime
import gzip
import json
import re
import threading
import uuid

import moto.dynamodb.responses as dynamodb_responses
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.dynamodb.exceptions import ItemSizeTooLarge, MockValidationException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.utilities import bytesize
from moto.dynamodb.responses import DynamoHandler
from moto.events.exceptions import ValidationException as EventsValidationException
from moto.events.models import EventTemplateParser, Rule, events_backends
from moto.firehose.models import FirehoseBackend, firehose_backends
from moto.logs.models import logs_backends
from moto.logs.exceptions import ResourceAlreadyExistsException
from moto.s3.models import s3_backends
from moto.sns.models import SNSBackend
from moto.utilities.arns import parse_arn
from moto.events.responses import EventsHandler
import moto.sesv2.urls as sesv2_urls
from moto.sesv2.responses import SESV2Response

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
        # Each touched stream's length, to drop what a cancelled transaction recorded.
        streams = {}
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                shard = self.get_table(op["TableName"]).stream_shard
                if shard is not None:
                    streams[id(shard)] = (shard, len(shard.items))
            except Exception:
                pass
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
            for shard, length in streams.values():
                del shard.items[length:]
            raise
        finally:
            _in_transaction.active = False


_original_update_item = DynamoDBBackend.update_item


def update_item(self, table_name, key, *args, **kwargs):
    with _dynamodb:
        shard = None
        try:
            table = self.get_table(table_name)
            shard = table.stream_shard
            existed = self.get_item(table_name, key) is not None
        except Exception:
            existed = True  # moto's own code reports what is wrong
        length = len(shard.items) if shard is not None else 0
        item = _original_update_item(self, table_name, key, *args, **kwargs)
        if shard is not None and not existed and len(shard.items) == length + 2:
            # moto's key-only put, then the update: keep one record, numbered as the first.
            whole = shard.items.pop(length + 1)
            whole.record["dynamodb"]["SequenceNumber"] = shard.items[length].record["dynamodb"]["SequenceNumber"]
            shard.items[length] = whole
        return item


_original_call_action = DynamoHandler.call_action


def call_action(self):
    with _dynamodb:
        return _original_call_action(self)


_original_streams_call_action = DynamoDBStreamsHandler.call_action


def streams_call_action(self):
    with _dynamodb:
        return _original_streams_call_action(self)


# --- AWS's limits (Herald's table of them: crates/core/src/limits.rs) ---

# EventBridge PutEvents: the entries of one request together at most 1 MB (1,048,576
# bytes), each entry counted as AWS documents it (Time 14 bytes, Source, DetailType,
# Detail and each Resource in UTF-8):
# https://docs.aws.amazon.com/eventbridge/latest/userguide/calculate-putevents-entry-size.html
PUT_EVENTS_BYTES = 1024 * 1024


def _put_events_entry_bytes(entry):
    size = 14 if entry.get("Time") is not None else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len((entry.get(name) or "").encode("utf-8"))
    return size + sum(len(r.encode("utf-8")) for r in entry.get("Resources") or [])


_original_put_events = EventsHandler.put_events


def put_events(self):
    entries = self._get_param("Entries") or []
    # Over 10 entries is moto's own refusal (the count is checked first, as AWS does).
    if len(entries) <= 10 and sum(map(_put_events_entry_bytes, entries)) > PUT_EVENTS_BYTES:
        raise EventsValidationException("Total size of the entries in the request is over the limit.")
    return _original_put_events(self)


# DynamoDB item: at most 400 KB (409,600 bytes), attribute names and values, as AWS sizes
# them (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html):
# a list or map is 3 bytes plus 1 a member, binary counts its raw bytes. moto refuses
# over 405,000 and counts no list or map overhead; numbers keep moto's count, by their
# text (at least AWS's).
ITEM_BYTES = 400 * 1024


def _value_bytes(value):
    if not isinstance(value, DynamoType):
        return bytesize(str(value))
    if value.is_list():
        return 3 + sum(1 + _value_bytes(v) for v in value.value)
    if value.is_map():
        return 3 + sum(1 + bytesize(k) + _value_bytes(v) for k, v in value.value.items())
    if value.type == "B":
        return len(base64.b64decode(value.value)) if isinstance(value.value, str) else len(value.value)
    if value.type == "BS":
        return sum(len(base64.b64decode(v)) for v in value.value)
    return value.size()


def _item_bytes(attrs):
    return sum(bytesize(k) + _value_bytes(v if isinstance(v, DynamoType) else DynamoType(v)) for k, v in attrs.items())


def _limited_setitem(self, key, value):
    others = sum(bytesize(k) + _value_bytes(v) for k, v in self.items() if k != key)
    if others + bytesize(key) + _value_bytes(value) > ITEM_BYTES:
        raise ItemSizeTooLarge  # "Item size has exceeded the maximum allowed size"
    dict.__setitem__(self, key, value)


# DynamoDB BatchWriteItem: at most 25 put and delete requests
# (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html),
# refused whole, and an item over 400 KB refuses the whole request before anything is
# written (moto wrote the requests before it). Its 16 MB cannot be reached by 25 items
# within 400 KB each.
BATCH_WRITE_REQUESTS = 25

_original_batch_write_item = DynamoHandler.batch_write_item


def batch_write_item(self):
    batches = self.body.get("RequestItems") or {}
    if sum(len(requests) for requests in batches.values()) > BATCH_WRITE_REQUESTS:
        raise MockValidationException("Too many items requested for the BatchWriteItem call")
    for requests in batches.values():
        for request in requests:
            if "PutRequest" in request and _item_bytes(request["PutRequest"]["Item"]) > ITEM_BYTES:
                raise ItemSizeTooLarge
    return _original_batch_write_item(self)


# DynamoDB TransactWriteItems: the items of one transaction together at most 4 MB
# (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html),
# read, as Herald does, as the smaller 4,000,000 bytes: a Put counts its item, the other
# actions their key and values. Refused before any condition is looked at.
TRANSACT_BYTES = 4_000_000

_original_handler_transact_write_items = DynamoHandler.transact_write_items


def handler_transact_write_items(self):
    total = 0
    for entry in self.body.get("TransactItems") or []:
        for kind, action in entry.items():
            if kind == "Put":
                total += _item_bytes(action.get("Item") or {})
            else:
                total += _item_bytes(action.get("Key") or {})
                total += _item_bytes(action.get("ExpressionAttributeValues") or {})
    if total > TRANSACT_BYTES:
        raise MockValidationException("Transaction request cannot be larger than 4 MB")
    return _original_handler_transact_write_items(self)


# --- SES: the mailbox simulator's events, published as a configuration set does ---

# (account, region, configuration set) -> {destination name: EventDestination}
_event_destinations = {}
_SIMULATOR_DOMAIN = "simulator.amazonses.com"


def create_configuration_set_event_destination(self):
    name = self._get_param("ConfigurationSetName") or self.uri_match.get("ConfigurationSetName")
    params = json.loads(self.body)
    key = (self.current_account, self.region, name)
    _event_destinations.setdefault(key, {})[params["EventDestinationName"]] = params["EventDestination"]
    return "{}"


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _simulated(address):
    """The SES event types the simulator address publishes, in order (none for others)."""
    local, _, domain = address.lower().partition("@")
    if domain != _SIMULATOR_DOMAIN:
        return []
    return {
        "success": ["Delivery"],
        "ooto": ["Delivery"],
        "bounce": ["Bounce"],
        "suppressionlist": ["Bounce"],
        "complaint": ["Delivery", "Complaint"],
    }.get(local.split("+")[0], [])


_DETAIL_TYPES = {"Delivery": "Email Delivered", "Bounce": "Email Bounced", "Complaint": "Email Complaint Received"}
_MATCHING = {"Delivery": "DELIVERY", "Bounce": "BOUNCE", "Complaint": "COMPLAINT"}


def _ses_event(event_type, address, mail):
    at = _now()
    detail = {"eventType": event_type, "mail": mail}
    if event_type == "Delivery":
        detail["delivery"] = {"timestamp": at, "processingTimeMillis": 120, "recipients": [address],
                              "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a8-1.smtp-out.amazonses.com"}
    elif event_type == "Bounce":
        suppressed = address.lower().startswith("suppressionlist")
        detail["bounce"] = {
            "feedbackId": str(uuid.uuid4()), "bounceType": "Permanent",
            "bounceSubType": "OnAccountSuppressionList" if suppressed else "General",
            "bouncedRecipients": [{"emailAddress": address, "action": "failed", "status": "5.1.1",
                                   "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
            "timestamp": at, "reportingMTA": "dns; amazonses.com"}
    else:
        detail["complaint"] = {"feedbackId": str(uuid.uuid4()), "complaintSubType": None,
                               "complainedRecipients": [{"emailAddress": address}], "timestamp": at,
                               "complaintFeedbackType": "abuse", "arrivalDate": at}
    return detail


_original_sesv2_send_email = SESV2Response.send_email


def sesv2_send_email(self):
    answer = _original_sesv2_send_email(self)
    params = json.loads(self.body)
    config_set = params.get("ConfigurationSetName")
    destinations = _event_destinations.get((self.current_account, self.region, config_set), {})
    if not config_set or not destinations:
        return answer
    to = params.get("Destination", {}).get("ToAddresses", [])
    tags = {"ses:configuration-set": [config_set], "ses:source-ip": ["127.0.0.1"],
            "ses:from-domain": [params.get("FromEmailAddress", "").rpartition("@")[2]],
            "ses:caller-identity": ["local"]}
    for tag in params.get("EmailTags", []):
        tags[tag["Name"]] = [tag["Value"]]
    subject = params.get("Content", {}).get("Simple", {}).get("Subject", {}).get("Data", "")
    mail = {"timestamp": _now(), "source": params.get("FromEmailAddress", ""),
            "sendingAccountId": self.current_account, "messageId": json.loads(answer)["MessageId"],
            "destination": to, "headersTruncated": False,
            "commonHeaders": {"from": [params.get("FromEmailAddress", "")], "to": to, "subject": subject},
            "tags": tags}
    backend = events_backends[self.current_account][self.region]
    for address in to:
        for event_type in _simulated(address):
            for destination in destinations.values():
                bus = destination.get("EventBridgeDestination", {}).get("EventBusArn")
                if not bus or not destination.get("Enabled", False) or \
                        _MATCHING[event_type] not in destination.get("MatchingEventTypes", []):
                    continue
                backend.put_events([{
                    "Source": "aws.ses", "DetailType": _DETAIL_TYPES[event_type], "EventBusName": bus,
                    "Resources": [f"arn:aws:ses:{self.region}:{self.current_account}:configuration-set/{config_set}"],
                    "Detail": json.dumps(_ses_event(event_type, address, mail))}])
    return answer


_original_send_to_targets = Rule.send_to_targets


def send_to_targets(self, original_event, transform_input=True):
    firehose = [t for t in self.targets if parse_arn(t["Arn"]).service == "firehose"]
    if not firehose:
        return _original_send_to_targets(self, original_event, transform_input)
    # moto raises on a target it does not know: hand it a copy without them.
    others = copy.copy(self)
    others.targets = [t for t in self.targets if t not in firehose]
    _original_send_to_targets(others, original_event, transform_input)
    if not self.event_pattern.matches_event(original_event):
        return
    for target in firehose:
        transformer = target.get("InputTransformer", {}) if transform_input else {}
        event = EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=original_event,
        )
        if isinstance(event, dict) and isinstance(event.get("time"), (int, float)):
            event = dict(event)
            event["time"] = datetime.datetime.fromtimestamp(event["time"], datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
        data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
        arn = parse_arn(target["Arn"])
        stream = arn.resource_id.split("/", 1)[-1]
        firehose_backends[arn.account][arn.region].put_record(stream, {"Data": data.encode()})


# Firehose's timestamp expressions take Java's DateTimeFormatter patterns.
_JAVA_DATE_FIELDS = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}


def _evaluate_prefix(prefix, now):
    def expression(match):
        namespace, _, argument = match.group(1).partition(":")
        if namespace == "timestamp":
            return now.strftime(re.sub("yyyy|MM|dd|HH|mm|ss", lambda f: _JAVA_DATE_FIELDS[f.group(0)], argument))
        if namespace == "firehose" and argument == "random-string":
            return uuid.uuid4().hex[:11]
        raise ValueError(f"Firehose prefix expression {match.group(0)} is not played")
    return re.sub(r"!\{([^}]*)\}", expression, prefix)


def put_s3_records(self, delivery_stream_name, version_id, s3_destination, records):
    now = datetime.datetime.now(datetime.timezone.utc)
    prefix = s3_destination.get("Prefix", "")
    if "!{" in prefix:
        # A prefix with expressions replaces Firehose's YYYY/MM/DD/HH/ time path.
        prefix = _evaluate_prefix(prefix, now)
    else:
        prefix = f"{prefix}{'' if prefix.endswith('/') or prefix == '' else '/'}{now.strftime('%Y/%m/%d/%H')}/"
    processors = s3_destination.get("ProcessingConfiguration", {})
    delimiter = b""
    if processors.get("Enabled", False):
        for processor in processors.get("Processors", []):
            if processor.get("Type") == "AppendDelimiterToRecord":
                delimiter = b"\n"
    body = b"".join(record["Data"] + delimiter for record in records)
    key = f"{prefix}{delivery_stream_name}-{version_id}-{now.strftime('%Y-%m-%d-%H-%M-%S')}-{uuid.uuid4()}"
    if s3_destination.get("CompressionFormat") == "GZIP":
        body = gzip.compress(body)
        key += ".gz"
    bucket = s3_destination["BucketARN"].split(":")[-1]
    s3_backends[self.account_id][self.partition].put_object(bucket, key, body)
    return [{"RecordId": str(uuid.uuid4())} for _ in records]


# --- SNS: SMS delivery status records, written to CloudWatch Logs as SNS writes them ---

# The local stack's failing phones, by the number's last four digits: SNS's provider response.
_FAILURES = {
    "0199": "Phone is currently unreachable/unavailable",
    "0198": "Phone carrier has blocked this message",
}
_original_sns_publish = SNSBackend.publish


def _sms_status_record(message_id, phone_number, failure):
    now = datetime.datetime.now(datetime.timezone.utc)
    success = failure is None
    delivery = {"mnc": 0, "numberOfMessageParts": 1, "destination": phone_number, "priceInUSD": 0.00645,
                "smsType": "Transactional", "mcc": 310, "dwellTimeMs": 120,
                "providerResponse": "Message has been accepted by phone carrier" if success else failure}
    if success:
        delivery["dwellTimeMsUntilDeviceAck"] = 800
    record = {"notification": {"messageId": message_id, "timestamp": now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]},
              "delivery": delivery, "status": "SUCCESS" if success else "FAILURE"}
    return int(now.timestamp() * 1000), json.dumps(record, separators=(",", ":"))


def sns_publish(self, message, arn, phone_number=None, *args, **kwargs):
    message_id = _original_sns_publish(self, message, arn, phone_number, *args, **kwargs)
    if not phone_number or not self.sms_attributes.get("DeliveryStatusIAMRole"):
        return message_id
    failure = _FAILURES.get(phone_number[-4:])
    success = failure is None
    try:
        rate = int(self.sms_attributes.get("DeliveryStatusSuccessSamplingRate", "0"))
    except ValueError:
        rate = 0
    if success and uuid.uuid4().int % 100 >= rate:
        return message_id
    group = f"sns/{self.region_name}/{self.account_id}/DirectPublishToPhoneNumber" + ("" if success else "/Failure")
    logs = logs_backends[self.account_id][self.region_name]
    try:
        logs.create_log_group(group, tags={})
    except ResourceAlreadyExistsException:
        pass
    stream = str(uuid.uuid4())
    logs.create_log_stream(group, stream)
    timestamp, record = _sms_status_record(message_id, phone_number, failure)
    logs.put_log_events(group, stream, [{"timestamp": timestamp, "message": record}])
    return message_id


def apply():
    Table.__deepcopy__ = _table_deepcopy
    DynamoDBBackend.transact_write_items = transact_write_items
    DynamoDBBackend.update_item = update_item
    DynamoHandler.call_action = call_action
    DynamoDBStreamsHandler.call_action = streams_call_action
    EventsHandler.put_events = put_events
    SESV2Response.create_configuration_set_event_destination = create_configuration_set_event_destination
    SESV2Response.send_email = sesv2_send_email
    Rule.send_to_targets = send_to_targets
    FirehoseBackend.put_s3_records = put_s3_records
    SNSBackend.publish = sns_publish
    sesv2_urls.url_paths[
        "{0}/v2/email/configuration-sets/(?P<ConfigurationSetName>[^/]+)/event-destinations$"
    ] = SESV2Response.dispatch
    LimitedSizeDict.__setitem__ = _limited_setitem
    DynamoHandler.batch_write_item = batch_write_item
    DynamoHandler.transact_write_items = handler_transact_write_items
    # DynamoDB TransactGetItems takes 100 items since 2022
    # (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactGetItems.html);
    # moto still refuses over 25, in AWS's own words.
    dynamodb_responses.TRANSACTION_MAX_ITEMS = 100
