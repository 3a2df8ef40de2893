"""tus 1.0.0: the wire protocol's syntax (``protocol``), its router (``dispatch``) and one
handler module per method (``handlers``).

A handler translates a tus request into calls on the protocol-independent upload core
(``tusserver.core``) and its answer back into tus headers. A second wire protocol lives in a
package of its own beside this one and drives the same core.
"""
