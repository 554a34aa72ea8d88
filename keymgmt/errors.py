"""Domain errors of keymgmt; the error middleware turns each into its HTTP answer."""

from typing import Any


class ApiError(Exception):
    status = 500
    title = "Internal Server Error"
    type = "internal_error"

    def __init__(self, detail: Any) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ApiError):
    status, title, type = 400, "Bad Request", "invalid_request"


class Unauthorized(ApiError):
    status, title, type = 401, "Unauthorized", "unauthorized"


class KeyNotFound(ApiError):
    status, title, type = 404, "Not Found", "not_found"


class UserNotFound(KeyNotFound):
    pass


class KeyExists(ApiError):
    status, title, type = 409, "Conflict", "key_exists"


class SettingNotFound(ApiError):
    status, title, type = 404, "Not Found", "not_found"


class SettingExists(ApiError):
    status, title, type = 409, "Conflict", "setting_exists"


class SettingInUse(ApiError):
    status, title, type = 409, "Conflict", "setting_in_use"


class EncryptionKeyMissing(ApiError):
    status, title, type = 503, "Service Unavailable", "encryption_key_missing"


class RouteNotFound(ApiError):
    status, title, type = 404, "Not Found", "not_found"


class PathTaken(ApiError):
    status, title, type = 409, "Conflict", "route_exists"


class PolicyNotFound(ApiError):
    status, title, type = 404, "Not Found", "not_found"


class PolicyInUse(ApiError):
    status, title, type = 409, "Conflict", "policy_in_use"


class DatabaseUnavailable(ApiError):
    status, title, type = 503, "Service Unavailable", "database_unavailable"


class LimitsUnavailable(ApiError):
    status, title, type = 503, "Service Unavailable", "limits_unavailable"
