"""MedPerf's exception hierarchy, as ``medperf/exceptions.py`` defines it."""


class MedperfException(Exception):
    """Medperf base exception"""


class CommunicationError(MedperfException):
    """Command cannot be executed because an external server could not be reached"""


class CommunicationRetrievalError(CommunicationError):
    """Expected object from the server could not be retrieved"""


class CommunicationAuthenticationError(CommunicationError):
    """Authentication with the server could not be done"""


class CommunicationRequestError(CommunicationError):
    """Request to the server could not be processed"""


class InvalidArgumentError(MedperfException):
    """Invalid argument(s) passed to medperf"""


class InvalidEntityError(MedperfException):
    """An entity is invalid. i.e. not valid hash or invalid file"""


class ExecutionError(MedperfException):
    """An error while running an action"""


class CleanExit(MedperfException):
    """Raised to exit the program without error"""
