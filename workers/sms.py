"""Old path of the SMS jobs, kept for one release (queued jobs name it): see kinnekt/sms/tasks.py,
kinnekt/subscribers/tasks.py (inbound texts) and kinnekt/shopify/tasks.py (the consent write-back)."""
from kinnekt.shopify.tasks import write_back_sms_consent  # noqa: F401
from kinnekt.sms.tasks import process_receipt, prune_signature_nonces, requeue_due_replies, send_message  # noqa: F401
from kinnekt.subscribers.tasks import process_inbound, requeue_inbound_sms  # noqa: F401
