"""Handlers of hq-server messages: functions of (core, user, body) that change the core and
return the reply fields; every send goes through the core's outbox."""
