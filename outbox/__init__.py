"""The transactional outbox: records and their events written in one transaction, then relayed."""
