"""SMS: the Vonage gateway, message encoding and segments, inbound messages and delivery receipts."""
