"""Subscribers: phone normalising, opt-in and opt-out, keywords, inbound SMS handling, checkout consent."""
