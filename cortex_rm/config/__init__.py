"""The daemon's configuration: a TOML file parsed once into frozen, typed sections.

One module per role's section (``resourcemanager``, ``nodemanager``, ``ring``),
each checking its own values; ``loader`` reads the file, converts every value to
its field's type (addresses to ``HostPort``) and runs the checks that span
sections.  The roles take their sections; only the entry points see the file.
"""

from cortex_rm.config.accounting import AccountingSection
from cortex_rm.config.errors import ConfigError
from cortex_rm.config.events import EventsSection
from cortex_rm.config.loader import Config, NodeSection, config_from_dict, load_config
from cortex_rm.config.nodemanager import NodeManagerDirs, NodeManagerSection
from cortex_rm.config.resourcemanager import QueueEntry, ResourceManagerSection, SchedulerSection
from cortex_rm.config.ring import RingSection

__all__ = [
    "AccountingSection",
    "Config",
    "ConfigError",
    "EventsSection",
    "NodeManagerDirs",
    "NodeManagerSection",
    "NodeSection",
    "QueueEntry",
    "ResourceManagerSection",
    "RingSection",
    "SchedulerSection",
    "config_from_dict",
    "load_config",
]
