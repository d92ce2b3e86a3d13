"""An example ordermesh-hooks plugin with two handlers that call other services.

- ``sync_tracking_to_shop`` sends each package's carrier and tracking number to the shop when a
  shipment ships.
- ``flag_hold_in_support`` opens a ticket in the support tool when an order is put on customer
  care hold.

Each handler stays off until its URL setting is set; ``omhooks handlers`` shows which.
"""
